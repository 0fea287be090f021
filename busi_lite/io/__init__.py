"""Input: discover folders, read images and DICOM, duplicate groups, group-aware splits."""
