"""Search and training over a compiled model: the bilevel optimizer, the trainer,
derivation of a genotype, search health, run files, random sampling."""
