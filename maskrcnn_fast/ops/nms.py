"""Placeholder: being written."""
def nms(*args, **kwargs):
    raise NotImplementedError

def batched_nms(*args, **kwargs):
    raise NotImplementedError

