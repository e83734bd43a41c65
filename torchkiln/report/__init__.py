"""`kiln report`: reading a pipeline's files (collect.py, at the workspace or a git
revision), drawing learning curves as inline SVG (svg.py) and writing one self-contained
HTML page (html.py). No torch, no numpy: JSON and image files only."""
