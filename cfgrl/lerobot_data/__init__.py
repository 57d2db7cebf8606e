"""LeRobotDataset v3.0 (lerobot 0.6.1's format) in and out of cfgrl's stores.

* ``dataset``  reading a local v3.0 dataset: ``meta/info.json``, tasks, episodes, data parquet files
* ``video``    decoding its MP4s with PyAV (AV1 included) at the query steps a store keeps
* ``ingest``   ``cfgrl import``: a dataset's episodes -> a store marked as demonstrations
* ``export``   ``cfgrl export-dataset``: a store's episodes (and a label version) -> a v3.0 dataset
* ``stats``    ``meta/stats.json``: mean, std, min, max, count and the quantiles π0.5 normalises by

A stage (``tests/test_layering.py``): export reads the label index.
"""
