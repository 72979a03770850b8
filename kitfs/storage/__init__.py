"""On-disk stores: kit's local storage and the kitfs blob cache."""
