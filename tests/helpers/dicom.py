"""Real DICOM files built from pydicom's sample MR, and sent with storescu."""

import copy
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

_TEMPLATE = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
# Storage SCPs drop trailing padding, so a copy could never equal the original.
del _TEMPLATE["DataSetTrailingPadding"]
# UTF-8, so tests can send any text a scanner operator might type.
_TEMPLATE.SpecificCharacterSet = "ISO_IR 192"


@dataclass
class SeriesSpec:
    number: str | None
    description: str | None
    start: datetime
    instances: int = 3
    operators_name: str | None = "prisma"
    uid: str = field(default_factory=generate_uid)


@dataclass
class StudySpec:
    patient_id: str | None = "SUBJ001"
    study_date: str | None = "20261203"
    study_time: str | None = "100000"
    series: list[SeriesSpec] = field(default_factory=list)
    uid: str = field(default_factory=generate_uid)


def three_series_study(
    operators_name: str = "prisma", patient: str = "SUBJ001"
) -> StudySpec:
    start = datetime(2026, 12, 3, 10, 0, 0)
    return StudySpec(
        patient_id=patient,
        series=[
            SeriesSpec("1", "T1 axial", start, operators_name=operators_name),
            SeriesSpec(
                "2",
                "T2 axial",
                start + timedelta(minutes=10),
                operators_name=operators_name,
            ),
            SeriesSpec(
                "3",
                "FLAIR",
                start + timedelta(minutes=20),
                operators_name=operators_name,
            ),
        ],
    )


def build_instances(study: StudySpec, series: SeriesSpec) -> list[Dataset]:
    datasets = []
    for index in range(series.instances):
        dataset = copy.deepcopy(_TEMPLATE)
        sop = generate_uid()
        dataset.SOPInstanceUID = sop
        dataset.file_meta.MediaStorageSOPInstanceUID = sop
        dataset.StudyInstanceUID = study.uid
        dataset.SeriesInstanceUID = series.uid
        _set(dataset, "PatientID", study.patient_id)
        _set(dataset, "StudyDate", study.study_date)
        _set(dataset, "StudyTime", study.study_time)
        _set(dataset, "SeriesNumber", series.number)
        _set(dataset, "SeriesDescription", series.description)
        _set(dataset, "OperatorsName", series.operators_name)
        dataset.SeriesDate = series.start.strftime("%Y%m%d")
        dataset.SeriesTime = series.start.strftime("%H%M%S")
        acquired = series.start + timedelta(seconds=30 * (index + 1))
        dataset.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S")
        dataset.ContentDate = acquired.strftime("%Y%m%d")
        dataset.ContentTime = acquired.strftime("%H%M%S")
        dataset.InstanceNumber = index + 1
        datasets.append(dataset)

    return datasets


def write_study(study: StudySpec, folder: Path) -> list[Path]:
    """Write every instance of ``study`` below ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for series in study.series:
        for dataset in build_instances(study, series):
            path = folder / f"{dataset.SOPInstanceUID}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            paths.append(path)

    return paths


def send(paths: Sequence[Path], port: int, host: str = "127.0.0.1") -> None:
    """C-STORE the files with dcmtk's storescu; TCP_NODELAY avoids 40 ms stalls."""
    environment = {**os.environ, "TCP_NODELAY": "1"}
    for start in range(0, len(paths), 500):
        chunk = [str(p) for p in paths[start : start + 500]]
        subprocess.run(
            ["storescu", "-aec", "HYPERWHEEL", host, str(port), *chunk],
            check=True,
            env=environment,
            capture_output=True,
            timeout=300,
        )


def _set(dataset: Dataset, keyword: str, value: str | None) -> None:
    if value is None:
        if keyword in dataset:
            delattr(dataset, keyword)
        return
    setattr(dataset, keyword, value)
