"""The OCI side of kitfs: media types, the Distribution API client and registry auth."""
