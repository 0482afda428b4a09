"""Reading Sentinel-2 scenes, the fixed 1-km cell grid, pixel windows and RGB thumbnails.

This package knows nothing of models, databases or the web: it turns files into arrays aligned on
the cell grid, and arrays into pictures.
"""
