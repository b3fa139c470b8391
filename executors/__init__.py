"""The site node: dataset catalogue, Dask cluster, site service and the transports that reach a site."""
