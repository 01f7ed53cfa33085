"""One ``APIRouter`` per API area: :mod:`.oauth` (Flinks OAuth), :mod:`.fdx` (FDX 5 data),
:mod:`.admin` (test hooks under ``/_admin``)."""
