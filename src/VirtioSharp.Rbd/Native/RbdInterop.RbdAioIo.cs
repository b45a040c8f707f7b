using System.Runtime.InteropServices;
using VirtioSharp.Block;
using VirtioSharp.Memory;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>rbd_aio_readv: reads straight into the buffers <paramref name="iov"/> names; they must stay valid until the completion fires.</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_aio_readv")]
    internal static unsafe partial int RbdAioReadV(nint image, IoVec* iov, int iovcnt, ulong offset, nint completion);

    /// <summary>rbd_aio_writev: writes from the buffers <paramref name="iov"/> names; they must stay valid until the completion fires.</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_aio_writev")]
    internal static unsafe partial int RbdAioWriteV(nint image, IoVec* iov, int iovcnt, ulong offset, nint completion);

    /// <summary>rbd_aio_flush: completes when every write started before it is durable.</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_aio_flush")]
    internal static partial int RbdAioFlush(nint image, nint completion);

    /// <summary>rbd_aio_discard: deallocates a range; it reads back zeroes when rbd_skip_partial_discard is off.</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_aio_discard")]
    internal static partial int RbdAioDiscard(nint image, ulong offset, ulong length, nint completion);

    /// <summary>rbd_aio_write_zeroes: the range reads back zeroes afterwards (zero_flags 0: it may be deallocated).</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_aio_write_zeroes")]
    internal static partial int RbdAioWriteZeroes(nint image, ulong offset, nuint length, nint completion, int zeroFlags, int opFlags);

    /// <summary>RBD_WRITE_ZEROES_FLAG_THICK_PROVISION: keep the zeroed range allocated.</summary>
    internal const int WriteZeroesThickProvision = 1;
}
