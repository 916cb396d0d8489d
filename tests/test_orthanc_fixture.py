"""The real-Orthanc fixture every integration test stands on."""

from tests.helpers.orthanc import OrthancServer


def test_orthanc_fixture_answers_system(orthanc: OrthancServer) -> None:
    """A started Orthanc answers /system with our AET on loopback."""
    system = orthanc.get("/system")

    assert system["DicomAet"] == "HYPERWHEEL"
    assert system["DicomPort"] == orthanc.dicom_port
    assert orthanc.process is not None and orthanc.process.poll() is None
