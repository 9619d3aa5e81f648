"""dSprites: the factor grid, the offline renderer, the official download and the HDF5 shards."""
