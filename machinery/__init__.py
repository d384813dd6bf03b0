"""The machinery that runs autokd's stages, kept apart from the paper's algorithm files.

    cli.py       command lines, flag types, one-line user errors      files.py     JSON logs, atomic writes, checkpoints
    executor.py  the task queue both pools share                      pool.py      worker processes of this machine
    ray_pool.py  the same workers as Ray actors (--ray)               capture.py   a training step replayed as a CUDA graph

The stages (generator, kd_loss, bohb, data, train, search, retrain, report, teachers/) import this
package; it never imports a stage: what a stage wants run (a worker's init, a task, a step function)
is handed to it as an argument.
"""
