"""Data for the sweeps: embedded benchmark sets (rendered scenes, bundled digits), real data streamed from
webdataset shards or open_clip CSV files, and view augmentation.

Embedded sets and held-out splits are ImageTextSets (see imageset.py); training data of any kind reaches the
loop through train_data.open_data. Nothing here downloads anything.
"""
