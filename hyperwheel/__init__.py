"""Hyperwheel: Orthanc to Flywheel, verified before anything is deleted."""

__version__ = "0.1.0"
