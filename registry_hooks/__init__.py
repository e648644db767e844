"""quantgate registry hooks: the promotion gate and what reacts to registry events."""
