"""Placeholder: being written."""
def BoxCoder(*args, **kwargs):
    raise NotImplementedError

def decode_boxes(*args, **kwargs):
    raise NotImplementedError

def encode_boxes(*args, **kwargs):
    raise NotImplementedError

