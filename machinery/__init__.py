"""The machinery that runs autokd's stages."""
