"""Guessing a file's Flywheel type and mimetype from its name."""

from __future__ import annotations

import mimetypes

# Longest suffix wins, so ".dicom.zip" is DICOM while a bare ".zip" is an
# archive: uploaders rely on Flywheel recognising zipped DICOM series.
TYPE_BY_SUFFIX: dict[str, str] = {
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".dcm.zip": "dicom",
    ".dicom.zip": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".bval": "bval",
    ".bvec": "bvec",
    ".zip": "archive",
    ".tar": "archive",
    ".tar.gz": "archive",
    ".tgz": "archive",
    ".json": "source code",
    ".py": "source code",
    ".txt": "text",
    ".csv": "tabular data",
    ".tsv": "tabular data",
    ".log": "log",
    ".pdf": "pdf",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
}


def guess_file_type(name: str) -> str | None:
    lowered = name.lower()
    matches = [suffix for suffix in TYPE_BY_SUFFIX if lowered.endswith(suffix)]
    if not matches:
        return None
    return TYPE_BY_SUFFIX[max(matches, key=len)]


def guess_mimetype(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"
