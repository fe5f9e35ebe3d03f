"""``heavyball-chain bench``: an optimizer shoot-out on built-in tasks (no download).

The library itself never imports this package.
"""
