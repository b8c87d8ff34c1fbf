"""Reading a Parquet file from a Python file object without a crash at interpreter exit.

`pyarrow.parquet.read_table(f)` (and `pandas.read_parquet(f)`, which calls it) on a Python file
object -- fsspec's, which efm uses for local and gs:// paths alike -- wraps `f` in a C++
`PyReadableFile` and scans it on Arrow's thread pools: the column chunks are read by an Arrow
I/O thread calling `f.read` under the GIL, and the scan's last reference to the file is often
dropped by an Arrow thread a moment *after* `read_table` has returned. When the process exits
in that moment (`efm sample` reads its table back, prints the summary and exits), the Arrow
thread asks for the GIL while Python is finalizing; CPython 3.11 ends such a thread with
`pthread_exit`, whose forced unwinding through the C++ destructor (`~PyReadableFile`, noexcept)
calls `std::terminate`: "terminate called without an active exception", SIGABRT, after the
output was written. (Seen as `PyThread_exit_thread <- take_gil <- PyGILState_Ensure <-
OwnedRefNoGIL::~OwnedRefNoGIL <- PyReadableFile::~PyReadableFile <- ~ParquetFileFragment` on an
Arrow worker; apache/arrow#34314, #39862. `ParquetFile(f).read(use_threads=False)` still reads
on another thread.)

`read_table` here copies the file into an Arrow-allocated buffer in the calling thread first, so
Arrow's threads only ever see C++ memory: nothing they hold or release needs the GIL.
"""

from __future__ import annotations

from typing import BinaryIO


def read_table(file: BinaryIO, columns: list[str] | None = None):
    """The whole Parquet file `file` (an open binary file, read from its start) as a pyarrow Table,
    with its schema metadata. Every call into `file` happens in the calling thread."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file.seek(0, 2)
    size = file.tell()
    file.seek(0)
    buffer = pa.allocate_buffer(size)
    with memoryview(buffer) as view:
        done = 0
        while done < size:
            got = file.readinto(view[done:])
            if not got:
                raise EOFError(f"Parquet file ended after {done} of {size} bytes")
            done += got
    return pq.read_table(pa.BufferReader(buffer), columns=columns)
