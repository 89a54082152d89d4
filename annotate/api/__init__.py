"""The JSON API of annotate: DRF views that validate input, call one service or selector and
shape the output."""
