"""Placeholder: being written."""
def RoIAlign(*args, **kwargs):
    raise NotImplementedError

def roi_align(*args, **kwargs):
    raise NotImplementedError

