"""The mine detector: the seed FCN, its bundle on disk, training and whole-scene scoring.

``fcn`` builds the network, ``reduce`` turns its probability map into one score per cell,
``bundle`` saves and loads a model with its JSON sidecar, ``train`` fits it to patch labels and
``score`` scores scenes tile by tile. This package reads imagery through ``imagery`` and never
imports the web layer or opens the database.
"""
