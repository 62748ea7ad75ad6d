"""Cryptography outside MLS: device identity, hybrid envelopes, at-rest keys, OPAQUE.

* :mod:`proto.crypto.identity` - Ed25519 device identity, fingerprints, safety numbers.
* :mod:`proto.crypto.envelope` - the X-Wing HPKE envelope sealing every payload to a device.
* :mod:`proto.crypto.atrest` - passphrase (Argon2id) keys and AEAD records for local storage.
* :mod:`proto.crypto.opaque` - typed wrappers over ``opaque_ke_py`` for both halves.

Every foreign exception (``cryptography``, ``opaque_ke_py``) is translated into a
class from :mod:`proto.errors` inside these modules and never escapes them.
"""
