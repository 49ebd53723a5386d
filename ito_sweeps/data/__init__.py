"""Data for the sweeps: embedded benchmark sets (rendered scenes, bundled digits) and view augmentation.

Every source returns an ImageTextSet (see imageset.py); nothing here downloads anything.
"""
