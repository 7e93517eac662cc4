"""Placeholder: being written."""
def AnchorGenerator(*args, **kwargs):
    raise NotImplementedError

def grid_anchors(*args, **kwargs):
    raise NotImplementedError

