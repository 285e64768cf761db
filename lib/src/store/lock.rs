//! OFD locks on qubes.xml (interoperate with Python's `fcntl.lockf`). OWNER: store helper.
