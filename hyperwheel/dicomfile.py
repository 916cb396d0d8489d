"""The few DICOM tags hyperwheel reads from a staged file."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.filereader import read_partial
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

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


_TAGS: list[BaseTag | int] = [Tag(keyword) for keyword in _KEYWORDS]
# Elements are sorted by tag, so nothing needed follows the largest one.
_LAST_TAG = max(_TAGS)


def _past_needed_tags(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return bool(tag > _LAST_TAG)


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
    """Read the tags above, stopping after the last of them in the file."""
    with open(path, "rb") as handle:
        dataset = read_partial(handle, stop_when=_past_needed_tags, specific_tags=_TAGS)

    return InstanceTags(*(_text(dataset.get(keyword)) for keyword in _KEYWORDS))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        # Several values travel joined by DICOM's own separator, as on the wire.
        return "\\".join(str(item) for item in value)
    text = str(value)

    return text if text.strip() else None
