"""Reading and writing ModelKit layers: tar entries, compression codecs, safe extraction."""
