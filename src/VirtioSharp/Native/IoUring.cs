using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>
/// A minimal io_uring (io_uring_setup(2), io_uring_enter(2)) for one thread: it queues
/// submissions (vectored reads, fdatasync, polls, eventfd writes), then hands them to the kernel and
/// waits for a completion in the same system call. The owning thread is the only one to touch it (IORING_SETUP_SINGLE_ISSUER where the
/// kernel has it). Ring indices are shared with the kernel: the submission tail and completion
/// head are published with release stores, the kernel's indices are read with acquire loads.
/// </summary>
public sealed unsafe class IoUring : IDisposable
{
    // include/uapi/linux/io_uring.h
    private const uint IORING_SETUP_SINGLE_ISSUER = 1u << 12;
    private const uint IORING_SETUP_DEFER_TASKRUN = 1u << 13;
    private const uint IORING_FEAT_SINGLE_MMAP = 1u << 0;
    private const uint IORING_FEAT_NODROP = 1u << 1;
    private const uint IORING_FEAT_CQE_SKIP = 1u << 11;
    private const long IORING_OFF_SQ_RING = 0;
    private const long IORING_OFF_CQ_RING = 0x8000000;
    private const long IORING_OFF_SQES = 0x10000000;
    private const uint IORING_ENTER_GETEVENTS = 1u << 0;
    private const byte IORING_OP_READV = 1;
    private const byte IORING_OP_WRITEV = 2;
    private const byte IORING_OP_FSYNC = 3;
    private const byte IORING_OP_POLL_ADD = 6;
    private const byte IORING_OP_POLL_REMOVE = 7;
    private const byte IORING_OP_TIMEOUT = 11;
    private const byte IORING_OP_WRITE = 23;
    private const byte IOSQE_CQE_SKIP_SUCCESS = 1 << 6;
    private const uint IORING_FSYNC_DATASYNC = 1u << 0;
    private const uint IORING_POLL_ADD_MULTI = 1u << 0;
    /// <summary>IORING_CQE_F_MORE: a multishot request stays armed after this completion.</summary>
    public const uint CqeFlagMore = 1u << 1;

    private readonly SafeFdHandle _fd;
    private readonly nint _sqRing, _cqRing, _sqes;
    private readonly nuint _sqRingSize, _cqRingSize, _sqesSize;
    private readonly uint* _sqHead, _sqTail, _sqArray, _cqHead, _cqTail;
    private readonly uint _sqMask, _sqEntries, _cqMask;
    private readonly Cqe* _cqes;
    private uint _sqLocalTail;
    private bool _disposed;
    private readonly long* _timeout = (long*)NativeMemory.AllocZeroed(2 * 16); // two struct __kernel_timespec, read at submission
    private readonly ulong* _one = OneValue(); // what QueueEventFdSignal writes, read at submission

    private IoUring(SafeFdHandle fd, in Params p)
    {
        _fd = fd;
        try
        {
            _sqRingSize = p.SqOff.Array + p.SqEntries * sizeof(uint);
            _cqRingSize = p.CqOff.Cqes + p.CqEntries * (uint)sizeof(Cqe);
            var single = (p.Features & IORING_FEAT_SINGLE_MMAP) != 0;
            if (single)
                _sqRingSize = _cqRingSize = Math.Max(_sqRingSize, _cqRingSize);
            _sqRing = MapOrThrow(_sqRingSize, IORING_OFF_SQ_RING);
            _cqRing = single ? _sqRing : MapOrThrow(_cqRingSize, IORING_OFF_CQ_RING);
            _sqesSize = p.SqEntries * (nuint)sizeof(Sqe);
            _sqes = MapOrThrow(_sqesSize, IORING_OFF_SQES);
        }
        catch
        {
            Unmap();
            fd.Dispose();
            throw;
        }
        var sq = (byte*)_sqRing;
        var cq = (byte*)_cqRing;
        _sqHead = (uint*)(sq + p.SqOff.Head);
        _sqTail = (uint*)(sq + p.SqOff.Tail);
        _sqMask = *(uint*)(sq + p.SqOff.RingMask);
        _sqEntries = *(uint*)(sq + p.SqOff.RingEntries);
        _sqArray = (uint*)(sq + p.SqOff.Array);
        _cqHead = (uint*)(cq + p.CqOff.Head);
        _cqTail = (uint*)(cq + p.CqOff.Tail);
        _cqMask = *(uint*)(cq + p.CqOff.RingMask);
        _cqes = (Cqe*)(cq + p.CqOff.Cqes);
        _sqLocalTail = Volatile.Read(ref *_sqTail);
        SkipsSuccessCompletions = (p.Features & IORING_FEAT_CQE_SKIP) != 0;
    }

    /// <summary>
    /// The kernel takes IOSQE_CQE_SKIP_SUCCESS (IORING_FEAT_CQE_SKIP, Linux 5.17): a submission may
    /// ask to post a completion only when it fails (<see cref="QueueEventFdSignal"/>).
    /// </summary>
    public bool SkipsSuccessCompletions { get; }

    /// <summary>
    /// Creates a ring of <paramref name="entries"/> submissions on the calling thread, or returns
    /// null with the reason when this kernel cannot give one (io_uring absent or disabled, a seccomp
    /// filter, or a kernel older than 5.5, whose completion queue may drop entries when full).
    /// </summary>
    public static IoUring? TryCreate(uint entries, out string? why)
    {
        foreach (var flags in (ReadOnlySpan<uint>)[IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, 0u])
        {
            var p = new Params { Flags = flags };
            var fd = (int)Interop.Syscall(Interop.SYS_io_uring_setup, (nint)entries, (nint)(&p), 0, 0, 0, 0);
            if (fd < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.EINVAL && flags != 0)
                    continue; // an older kernel without these set-up flags
                why = $"io_uring_setup failed: {Errno.Describe(errno)}";
                return null;
            }
            var handle = new SafeFdHandle(fd);
            if ((p.Features & IORING_FEAT_NODROP) == 0)
            {
                handle.Dispose();
                why = "this kernel's io_uring may drop completions (IORING_FEAT_NODROP came in Linux 5.5)";
                return null;
            }
            try
            {
                why = null;
                return new IoUring(handle, p);
            }
            catch (NativeCallException e)
            {
                why = e.Message;
                return null;
            }
        }
        why = "io_uring_setup refused every set-up";
        return null;
    }

    // IORING_REGISTER_PROBE (Linux 5.6): which opcodes this kernel knows.
    private const uint IORING_REGISTER_PROBE = 8;
    private const ushort IO_URING_OP_SUPPORTED = 1;

    /// <summary>
    /// Whether this kernel supports <paramref name="opcode"/>; null when it cannot say (a kernel
    /// before 5.6 has no IORING_REGISTER_PROBE; those before 5.5 were refused at set-up).
    /// </summary>
    public bool? SupportsOpcode(byte opcode)
    {
        const int ops = 64;
        // struct io_uring_probe: 16-byte header, then 8 bytes per op (op, resv, flags, resv2).
        var probe = stackalloc byte[16 + ops * 8];
        new Span<byte>(probe, 16 + ops * 8).Clear();
        var added = false;
        try
        {
            _fd.DangerousAddRef(ref added);
            var r = Interop.Syscall(Interop.SYS_io_uring_register, _fd.Fd, (nint)IORING_REGISTER_PROBE, (nint)probe, ops, 0, 0);
            if (r < 0)
                return null;
        }
        finally
        {
            if (added)
                _fd.DangerousRelease();
        }
        var lastOp = probe[0];
        if (opcode > lastOp || opcode >= ops)
            return false;
        var entry = probe + 16 + opcode * 8;
        return (*(ushort*)(entry + 2) & IO_URING_OP_SUPPORTED) != 0;
    }

    /// <summary>Opcodes the queue workers use.</summary>
    public const byte OpReadV = IORING_OP_READV, OpFSync = IORING_OP_FSYNC, OpPollAdd = IORING_OP_POLL_ADD;

    /// <summary>
    /// Queues a multishot poll of <paramref name="fd"/> for <paramref name="events"/> (default POLLIN;
    /// POLLERR and POLLHUP always count); each completion's result is the events seen. The
    /// caller keeps the descriptor open while the poll is armed.
    /// </summary>
    public bool QueuePollMultishot(int fd, ulong userData, uint events = 0x0001)
    {
        if (!TryNextSqe(out var sqe))
            return false;
        sqe->Opcode = IORING_OP_POLL_ADD;
        sqe->Fd = fd;
        sqe->OpFlags = events; // poll32_events
        sqe->Len = IORING_POLL_ADD_MULTI;
        sqe->UserData = userData;
        return true;
    }

    /// <summary>Queues the removal of the poll queued with <paramref name="pollUserData"/> (IORING_OP_POLL_REMOVE, Linux 5.1).</summary>
    public bool QueuePollRemove(ulong pollUserData, ulong userData)
    {
        if (!TryNextSqe(out var sqe))
            return false;
        sqe->Opcode = IORING_OP_POLL_REMOVE;
        sqe->Fd = -1;
        sqe->Addr = pollUserData;
        sqe->UserData = userData;
        return true;
    }

    /// <summary>
    /// Queues preadv(<paramref name="fd"/>, <paramref name="iov"/>, <paramref name="count"/>, <paramref name="offset"/>).
    /// The iovec array and the buffers it names must stay valid until the completion arrives.
    /// False when the submission queue is full (submit, then try again).
    /// </summary>
    public bool QueueReadV(int fd, void* iov, int count, ulong offset, ulong userData)
    {
        if (!TryNextSqe(out var sqe))
            return false;
        sqe->Opcode = IORING_OP_READV;
        sqe->Fd = fd;
        sqe->Off = offset;
        sqe->Addr = (ulong)iov;
        sqe->Len = (uint)count;
        sqe->UserData = userData;
        return true;
    }

    /// <summary>
    /// Queues pwritev(<paramref name="fd"/>, <paramref name="iov"/>, <paramref name="count"/>, <paramref name="offset"/>)
    /// (IORING_OP_WRITEV came with READV in Linux 5.1). The iovec array and the buffers stay valid
    /// until the completion arrives. False when the submission queue is full.
    /// </summary>
    public bool QueueWriteV(int fd, void* iov, int count, ulong offset, ulong userData)
    {
        if (!TryNextSqe(out var sqe))
            return false;
        sqe->Opcode = IORING_OP_WRITEV;
        sqe->Fd = fd;
        sqe->Off = offset;
        sqe->Addr = (ulong)iov;
        sqe->Len = (uint)count;
        sqe->UserData = userData;
        return true;
    }

    /// <summary>
    /// Queues eventfd_write(<paramref name="fd"/>, 1) with a completion only when it fails (needs
    /// <see cref="SkipsSuccessCompletions"/>): a notification sent by the call that then waits, so
    /// its success does not end the wait. The descriptor must have O_NONBLOCK, or the kernel hands
    /// the write to its worker threads instead of doing it in the submitting call. The caller
    /// keeps the descriptor open until the entry is submitted (<see cref="Unsubmitted"/>).
    /// </summary>
    public bool QueueEventFdSignal(int fd, ulong userData)
    {
        if (!SkipsSuccessCompletions)
            throw new InvalidOperationException("this kernel's io_uring cannot skip completions (IOSQE_CQE_SKIP_SUCCESS came in Linux 5.17)");
        if (!TryNextSqe(out var sqe))
            return false;
        sqe->Opcode = IORING_OP_WRITE;
        sqe->Flags = IOSQE_CQE_SKIP_SUCCESS;
        sqe->Fd = fd;
        sqe->Off = ulong.MaxValue; // -1: the file's position (an eventfd has none)
        sqe->Addr = (ulong)_one;
        sqe->Len = sizeof(ulong);
        sqe->UserData = userData;
        return true;
    }

    /// <summary>Entries queued and not yet taken by the kernel.</summary>
    public uint Unsubmitted => _sqLocalTail - Volatile.Read(ref *_sqHead);

    /// <summary>Queues fdatasync(<paramref name="fd"/>).</summary>
    public bool QueueFDataSync(int fd, ulong userData)
    {
        if (!TryNextSqe(out var sqe))
            return false;
        sqe->Opcode = IORING_OP_FSYNC;
        sqe->Fd = fd;
        sqe->OpFlags = IORING_FSYNC_DATASYNC;
        sqe->UserData = userData;
        return true;
    }

    /// <summary>
    /// Queues a timeout that completes (with -ETIME) after <paramref name="nanoseconds"/>. The kernel
    /// reads the time when the entry is submitted, from storage the ring owns: one per
    /// <paramref name="slot"/> (0 or 1), so two timeouts may wait for the same submission.
    /// </summary>
    public bool QueueTimeout(long nanoseconds, ulong userData, int slot = 0)
    {
        if ((uint)slot > 1)
            throw new ArgumentOutOfRangeException(nameof(slot), "the ring keeps two timespecs: slot 0 or 1");
        if (!TryNextSqe(out var sqe))
            return false;
        var ts = _timeout + 2 * slot;
        ts[0] = nanoseconds / 1_000_000_000;
        ts[1] = nanoseconds % 1_000_000_000;
        sqe->Opcode = IORING_OP_TIMEOUT;
        sqe->Fd = -1;
        sqe->Addr = (ulong)ts;
        sqe->Len = 1;
        sqe->Off = 0; // a pure timeout, not counting completions
        sqe->UserData = userData;
        return true;
    }

    private static ulong* OneValue()
    {
        var one = (ulong*)NativeMemory.Alloc(sizeof(ulong));
        *one = 1;
        return one;
    }

    private bool TryNextSqe(out Sqe* sqe)
    {
        var head = Volatile.Read(ref *_sqHead);
        if (_sqLocalTail - head >= _sqEntries)
        {
            sqe = null;
            return false;
        }
        var index = _sqLocalTail & _sqMask;
        sqe = (Sqe*)_sqes + index;
        *sqe = default;
        _sqArray[index] = index;
        _sqLocalTail++;
        return true;
    }

    /// <summary>
    /// Hands every queued submission to the kernel and, when <paramref name="wait"/>, sleeps until
    /// at least one completion is there, in one io_uring_enter(2). EINTR, EAGAIN and EBUSY return
    /// early; entries the kernel did not take stay queued for the next call. The descriptors
    /// named by the submissions must stay open for the call.
    /// </summary>
    public void SubmitAndWait(bool wait) => Enter(wait, wait);

    /// <summary>
    /// Hands queued submissions to the kernel and lets it post the completions it has (a ring
    /// set up with DEFER_TASKRUN posts them only when asked), without waiting: for polling.
    /// </summary>
    public void SubmitAndReap() => Enter(wait: false, getEvents: true);

    private void Enter(bool wait, bool getEvents)
    {
        Volatile.Write(ref *_sqTail, _sqLocalTail); // release: the entries are written
        // Without SQPOLL only io_uring_enter moves the kernel's head: what lies between it and
        // our tail is everything not yet taken, including entries a short submit left behind.
        var toSubmit = _sqLocalTail - Volatile.Read(ref *_sqHead);
        if (toSubmit == 0 && !getEvents)
            return;
        var added = false;
        try
        {
            _fd.DangerousAddRef(ref added);
            var r = Interop.Syscall(Interop.SYS_io_uring_enter, _fd.Fd, (nint)toSubmit, wait ? 1 : 0,
                (nint)(getEvents ? IORING_ENTER_GETEVENTS : 0), 0, 0);
            if (r < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR && errno != Errno.EAGAIN && errno != Errno.EBUSY)
                    throw new NativeCallException("io_uring_enter", errno);
            }
        }
        finally
        {
            if (added)
                _fd.DangerousRelease();
        }
    }

    /// <summary>Whether a completion is waiting (a look, for polling).</summary>
    public bool HasCompletion => *_cqHead != Volatile.Read(ref *_cqTail);

    /// <summary>Takes the next completion, if any.</summary>
    public bool TryTakeCompletion(out Cqe cqe)
    {
        var head = *_cqHead;
        if (head == Volatile.Read(ref *_cqTail)) // acquire: the entry is written before the tail moves
        {
            cqe = default;
            return false;
        }
        cqe = _cqes[head & _cqMask];
        Volatile.Write(ref *_cqHead, head + 1); // release: the slot may be reused
        return true;
    }

    private nint MapOrThrow(nuint length, long offset)
    {
        var address = Interop.MMap(0, length, Interop.PROT_READ | Interop.PROT_WRITE, Interop.MAP_SHARED | MapPopulate, _fd, offset);
        if (address == Interop.MAP_FAILED)
            throw NativeCallException.FromLastError("mmap (io_uring)");
        return address;
    }

    private const int MapPopulate = 0x8000;

    private void Unmap()
    {
        if (_sqes != 0)
            Interop.MUnmap(_sqes, _sqesSize);
        if (_cqRing != 0 && _cqRing != _sqRing)
            Interop.MUnmap(_cqRing, _cqRingSize);
        if (_sqRing != 0)
            Interop.MUnmap(_sqRing, _sqRingSize);
    }

    /// <summary>Closes the ring: the kernel cancels whatever is still armed.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        Unmap();
        NativeMemory.Free(_timeout);
        NativeMemory.Free(_one);
        _fd.Dispose();
    }

    /// <summary>struct io_uring_cqe.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Cqe
    {
        public ulong UserData;
        public int Result;
        public uint Flags;
    }

    /// <summary>struct io_uring_sqe (64 bytes); only the fields we use are named.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 64)]
    private struct Sqe
    {
        [FieldOffset(0)] public byte Opcode;
        [FieldOffset(1)] public byte Flags;
        [FieldOffset(4)] public int Fd;
        [FieldOffset(8)] public ulong Off;
        [FieldOffset(16)] public ulong Addr;
        [FieldOffset(24)] public uint Len;
        [FieldOffset(28)] public uint OpFlags;
        [FieldOffset(32)] public ulong UserData;
    }

    /// <summary>struct io_sqring_offsets / io_cqring_offsets (same shape, 40 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct RingOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, FlagsOrOverflow, DroppedOrCqes, ArrayOrFlags, Reserved1;
        public ulong UserAddr;
        public readonly uint Array => ArrayOrFlags;
        public readonly uint Cqes => DroppedOrCqes;
    }

    /// <summary>struct io_uring_params (120 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Params
    {
        public uint SqEntries, CqEntries, Flags, SqThreadCpu, SqThreadIdle, Features, WqFd;
        public uint Resv0, Resv1, Resv2;
        public RingOffsets SqOff;
        public RingOffsets CqOff;
    }
}
