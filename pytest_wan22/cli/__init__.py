"""The command-line tools: `wan22-check` (check.py) and `wan22-neighbour` (neighbour.py).

`wan22-synth` is the command line of pytest_wan22/synth.py itself: ComfyUI's interpreter runs that file by path,
outside the package, to write the model files.
"""
