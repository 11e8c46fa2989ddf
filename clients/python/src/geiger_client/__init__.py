"""geiger_client: a client and offline verifier for geiger, auditable
random draws from radioactive decay.

- :class:`Client` talks to a cluster (chains, draws, lookups), retrying on
  another node with the same ``request_id``.
- :func:`verify_record`, :func:`verify_draw`, :func:`verify_chain` check a
  record offline: content-hash ID, key validity, Ed25519 signature, entropy
  hash and segments, and re-derivation (geiger-derive-v1 or v2).
- :func:`provenance.check_draw_provenance` checks each entropy segment
  against the device-signed chunk it came from (docs/DERIVATION.md §10).
- ``python -m geiger_client verify FILE --keys FILE_OR_URL [--chunks URL]``
  is the CLI.
"""

from .canonical import CanonicalError, canonical_bytes, parse_json
from .client import REPLAY_HEADER, Client, Issued, IssuedChain, Lookup
from .derive import DERIVATION_V1, NeedMoreEntropy, derive
from .derive_v2 import DERIVATION_V2, derive_v2, derive_v2_bits
from .errors import ApiError, ClientError, PreviousAlreadyUsed, ProtocolError, Unavailable
from .verify import (
    VerifyError,
    VerifyReport,
    key_id_of,
    record_id,
    verify_chain,
    verify_draw,
    verify_lookup,
    verify_record,
)

__version__ = "0.1.0"

__all__ = [
    "ApiError", "CanonicalError", "Client", "ClientError", "DERIVATION_V1", "DERIVATION_V2", "Issued", "IssuedChain",
    "Lookup", "NeedMoreEntropy", "PreviousAlreadyUsed", "ProtocolError", "REPLAY_HEADER", "Unavailable",
    "VerifyError", "VerifyReport", "canonical_bytes", "derive", "derive_v2", "derive_v2_bits", "key_id_of", "parse_json", "record_id",
    "verify_chain", "verify_draw", "verify_lookup", "verify_record",
]
