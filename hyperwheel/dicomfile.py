"""The few DICOM tags hyperwheel reads from a staged file."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.multival import MultiValue

_KEYWORDS = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "SeriesNumber",
    "SeriesDescription",
    "OperatorsName",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDateTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "ContentDate",
    "ContentTime",
    "Modality",
)


@dataclass(frozen=True)
class InstanceTags:
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    patient_id: str | None
    study_date: str | None
    study_time: str | None
    series_number: str | None
    series_description: str | None
    operators_name: str | None
    series_date: str | None
    series_time: str | None
    acquisition_datetime: str | None
    acquisition_date: str | None
    acquisition_time: str | None
    content_date: str | None
    content_time: str | None
    modality: str | None


def read_tags(path: Path) -> InstanceTags:
    """Read the tags above without loading pixel data."""
    dataset = pydicom.dcmread(
        path, stop_before_pixels=True, specific_tags=list(_KEYWORDS)
    )

    return InstanceTags(*(_text(dataset.get(keyword)) for keyword in _KEYWORDS))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        # Several values travel joined by DICOM's own separator, as on the wire.
        return "\\".join(str(item) for item in value)
    text = str(value)

    return text if text.strip() else None
