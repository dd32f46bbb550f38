"""Composable SAE recipes: activations, Matryoshka, LISTA, K annealing, TERM, orthogonality, LOO, AuxK.

Import from the submodules (`pipeline.config.recipe` holds the specs, free of torch, so config validation is fast).
"""
