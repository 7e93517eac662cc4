"""Placeholder: being written."""
def MultiScaleRoIAlign(*args, **kwargs):
    raise NotImplementedError

def multilevel_roi_align(*args, **kwargs):
    raise NotImplementedError

