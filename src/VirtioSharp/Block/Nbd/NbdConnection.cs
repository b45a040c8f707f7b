using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using static VirtioSharp.Block.Nbd.NbdProtocol;

namespace VirtioSharp.Block.Nbd;

/// <summary>
/// One NBD connection in transmission mode. Requests from any thread (each queue's worker) go
/// out whole under a send lock, header and data in one sendmsg straight from guest memory. One
/// receiver thread reads every reply: it finds the request by its cookie (slot index and
/// generation, both checked), receives read data straight into the request's buffers, and
/// completes the request. Any protocol break, a closed socket or a request older than the
/// timeout ends the connection: every request in flight fails with -EIO and no byte of guest
/// memory is written after that. Only the receiver thread completes requests.
/// </summary>
internal sealed unsafe class NbdConnection : IDisposable
{
    public const int Slots = 1024;
    private const int MaxIov = 1024;          // IOV_MAX
    private const int TickMs = 250;           // how often an idle receiver looks at the clock
    private const int EIO = 5;

    /// <summary>One request on the wire.</summary>
    private sealed class Slot
    {
        public int Index;
        public uint Generation;
        public bool Busy;
        public BlkIoKind Kind;
        public ulong Offset;
        public uint Length;
        public IoVec* Iov;
        public int IovCount;
        public CompletionPort? Port;
        public ushort Tag;
        public NbdSyncWaiter? Waiter;
        public long Started;
        public ulong Covered;
        public int Error;
    }

    public enum StartResult
    {
        Started,
        NoSlot,
        Dead,
    }

    private readonly Socket _socket;
    private readonly SafeSocketHandle _fd;
    private readonly ILogSink? _log;
    private readonly string _name;
    private readonly long _timeoutMs;
    private readonly Slot[] _slots = new Slot[Slots];
    private readonly int[] _free = new int[Slots];
    private int _freeCount = Slots;
    private readonly Lock _slotLock = new();
    private readonly Lock _sendLock = new();
    private readonly byte[] _headers = GC.AllocateArray<byte>(Slots * 32, pinned: true);
    private readonly IoVec[] _sendIov = GC.AllocateArray<IoVec>(MaxIov + 1, pinned: true);
    private readonly IoVec[] _recvIov = GC.AllocateArray<IoVec>(MaxIov, pinned: true);
    private readonly byte[] _reply = GC.AllocateArray<byte>(64, pinned: true);
    private readonly byte[] _scratch = GC.AllocateArray<byte>(64 * 1024, pinned: true);
    private readonly Thread _receiver;
    private volatile bool _dead;
    private volatile string? _deathReason;
    private int _inFlight;

    public NbdConnection(Socket socket, NbdExportInfo info, string name, TimeSpan timeout, ILogSink? log)
    {
        _socket = socket;
        _fd = socket.SafeHandle;
        Info = info;
        _name = name;
        _timeoutMs = (long)timeout.TotalMilliseconds;
        _log = log;
        for (var i = 0; i < Slots; i++)
        {
            _slots[i] = new Slot { Index = i };
            _free[i] = Slots - 1 - i;
        }
        _receiver = new Thread(Receive) { IsBackground = true, Name = $"nbd {name}" };
        _receiver.Start();
    }

    public NbdExportInfo Info { get; }
    public bool Dead => _dead;
    public string? DeathReason => _deathReason;
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>
    /// Sends one request. <paramref name="iov"/> (data of a write, buffers of a read) stays valid
    /// until the request completes through <paramref name="port"/> or <paramref name="waiter"/>.
    /// </summary>
    public StartResult Start(BlkIoKind kind, ushort flags, ulong offset, uint length, IoVec* iov, int iovCount,
        CompletionPort? port, ushort tag, NbdSyncWaiter? waiter)
    {
        if (iovCount > MaxIov)
            return StartResult.NoSlot;
        Slot slot;
        lock (_slotLock)
        {
            if (_dead)
                return StartResult.Dead;
            if (_freeCount == 0)
                return StartResult.NoSlot;
            slot = _slots[_free[--_freeCount]];
            slot.Busy = true;
            slot.Generation++;
            slot.Kind = kind;
            slot.Offset = offset;
            slot.Length = length;
            slot.Iov = iov;
            slot.IovCount = iovCount;
            slot.Port = port;
            slot.Tag = tag;
            slot.Waiter = waiter;
            slot.Started = Environment.TickCount64;
            slot.Covered = 0;
            slot.Error = 0;
            _inFlight++;
        }
        var cookie = ((ulong)slot.Generation << 32) | (uint)slot.Index;
        var command = kind switch
        {
            BlkIoKind.Read => CmdRead,
            BlkIoKind.Write => CmdWrite,
            BlkIoKind.Flush => CmdFlush,
            BlkIoKind.Discard => CmdTrim,
            _ => CmdWriteZeroes,
        };
        // From here on the slot may be completed (by a failure) at any time: only locals are used.
        lock (_sendLock)
        {
            var header = new Span<byte>(Unsafe.AsPointer(ref _headers[slot.Index * 32]), RequestSize);
            BinaryPrimitives.WriteUInt32BigEndian(header, RequestMagic);
            BinaryPrimitives.WriteUInt16BigEndian(header[4..], flags);
            BinaryPrimitives.WriteUInt16BigEndian(header[6..], command);
            BinaryPrimitives.WriteUInt64BigEndian(header[8..], cookie);
            BinaryPrimitives.WriteUInt64BigEndian(header[16..], offset);
            BinaryPrimitives.WriteUInt32BigEndian(header[24..], length);
            fixed (IoVec* send = _sendIov)
            {
                send[0] = new IoVec((nint)Unsafe.AsPointer(ref _headers[slot.Index * 32]), RequestSize);
                var count = 1;
                if (kind == BlkIoKind.Write)
                {
                    for (var i = 0; i < iovCount; i++)
                        send[count++] = iov[i];
                }
                if (!SendAll(send, count))
                    Kill("the connection broke while sending");
            }
        }
        return StartResult.Started;
    }

    private bool SendAll(IoVec* iov, int count)
    {
        try
        {
            while (count > 0)
            {
                if (_dead)
                    return false;
                var msg = new MsgHdr { Iov = iov, IovLength = (nuint)count };
                var n = Interop.SendMsg(_fd, &msg, Interop.MSG_NOSIGNAL);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Errno.EINTR)
                        continue;
                    if (errno != Errno.EAGAIN)
                        return false;
                    Span<PollFd> p = [new PollFd((int)_fd.DangerousGetHandle(), PollFd.Out)];
                    FdPoll.Wait(p, TickMs);
                    continue;
                }
                Advance(ref iov, ref count, (nuint)n);
            }
            return true;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>Moves past <paramref name="done"/> bytes of an iovec array (the array's entries are ours to change).</summary>
    private static void Advance(ref IoVec* iov, ref int count, nuint done)
    {
        while (count > 0 && done >= iov->Length)
        {
            done -= iov->Length;
            iov++;
            count--;
        }
        if (count > 0 && done > 0)
            *iov = new IoVec(iov->Base + (nint)done, iov->Length - done);
    }

    /// <summary>Ends the connection from any thread: the receiver wakes, fails what is in flight and leaves.</summary>
    public void Kill(string reason)
    {
        _deathReason ??= reason;
        _dead = true;
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
    }

    // ---------------- receiver thread ----------------

    private void Receive()
    {
        string reason;
        try
        {
            reason = ReceiveLoop();
        }
        catch (Exception e)
        {
            reason = $"unexpected {e.GetType().Name}: {e.Message}";
        }
        _deathReason ??= reason;
        Kill(reason);
        FailAll();
    }

    /// <summary>Reads replies until the connection ends; returns why it ended.</summary>
    private string ReceiveLoop()
    {
        var reply = (byte*)Unsafe.AsPointer(ref _reply[0]);
        while (true)
        {
            var got = RecvExact(reply, 4, idle: true);
            if (got != null)
                return got;
            var magic = BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(reply, 4));
            string? broken;
            if (magic == SimpleReplyMagic)
                broken = SimpleReply(reply);
            else if (magic == StructuredReplyMagic && Info.Structured)
                broken = StructuredChunk(reply);
            else
                broken = $"protocol error: reply magic 0x{magic:x8}";
            if (broken != null)
                return broken;
        }
    }

    private string? SimpleReply(byte* reply)
    {
        var failed = RecvExact(reply + 4, SimpleReplySize - 4, idle: false);
        if (failed != null)
            return failed;
        var error = BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(reply + 4, 4));
        var cookie = BinaryPrimitives.ReadUInt64BigEndian(new ReadOnlySpan<byte>(reply + 8, 8));
        var slot = Find(cookie);
        if (slot is null)
            return $"protocol error: a reply for cookie 0x{cookie:x}, which is not in flight";
        if (slot.Kind == BlkIoKind.Read && Info.Structured)
            return "protocol error: a simple reply to a read after structured replies were negotiated";
        if (slot.Kind == BlkIoKind.Read && error == 0)
        {
            failed = RecvInto(slot, 0, slot.Length);
            if (failed != null)
                return failed;
        }
        if (error != 0)
            _log.Debug($"nbd {_name}: {slot.Kind} at {slot.Offset} + {slot.Length} failed on the server (error {error})");
        Finish(slot, error == 0 ? Success(slot) : -EIO);
        return null;
    }

    private string? StructuredChunk(byte* reply)
    {
        var failed = RecvExact(reply + 4, StructuredReplySize - 4, idle: false);
        if (failed != null)
            return failed;
        var flags = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(reply + 4, 2));
        var type = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(reply + 6, 2));
        var cookie = BinaryPrimitives.ReadUInt64BigEndian(new ReadOnlySpan<byte>(reply + 8, 8));
        var length = BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(reply + 16, 4));
        var slot = Find(cookie);
        if (slot is null)
            return $"protocol error: a reply chunk for cookie 0x{cookie:x}, which is not in flight";
        var payload = reply + 20; // room for 24 more bytes of fixed fields
        switch (type)
        {
            case ReplyTypeNone:
                if (length != 0 || (flags & ReplyFlagDone) == 0)
                    return "protocol error: NBD_REPLY_TYPE_NONE with a payload or without the done flag";
                break;
            case ReplyTypeOffsetData:
                {
                    if (slot.Kind != BlkIoKind.Read || length <= 8)
                        return $"protocol error: a data chunk of {length} bytes for a {slot.Kind}";
                    if ((failed = RecvExact(payload, 8, idle: false)) != null)
                        return failed;
                    var offset = BinaryPrimitives.ReadUInt64BigEndian(new ReadOnlySpan<byte>(payload, 8));
                    var size = length - 8;
                    if (!Within(slot, offset, size, out var at))
                        return $"protocol error: data chunk at {offset} + {size} outside the read at {slot.Offset} + {slot.Length}";
                    if ((failed = RecvInto(slot, at, size)) != null)
                        return failed;
                    slot.Covered += size;
                    break;
                }
            case ReplyTypeOffsetHole:
                {
                    if (slot.Kind != BlkIoKind.Read || length != 12)
                        return $"protocol error: a hole chunk of {length} bytes for a {slot.Kind}";
                    if ((failed = RecvExact(payload, 12, idle: false)) != null)
                        return failed;
                    var offset = BinaryPrimitives.ReadUInt64BigEndian(new ReadOnlySpan<byte>(payload, 8));
                    var size = BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(payload + 8, 4));
                    if (size == 0 || !Within(slot, offset, size, out var at))
                        return $"protocol error: hole chunk at {offset} + {size} outside the read at {slot.Offset} + {slot.Length}";
                    ZeroInto(slot, at, size);
                    slot.Covered += size;
                    break;
                }
            default:
                {
                    if ((type & ReplyTypeErrorBit) == 0)
                        return $"protocol error: unknown reply chunk type {type}";
                    // proto.md: error chunks carry error (32), message length (16), message[, offset (64)].
                    if (length < 6 || length > 6 + MaxMessage + 8)
                        return $"protocol error: an error chunk of {length} bytes";
                    if ((failed = RecvExact(payload, 6, idle: false)) != null)
                        return failed;
                    var error = BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(payload, 4));
                    var messageLength = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(payload + 4, 2));
                    var rest = length - 6;
                    if (messageLength > rest || (type == ReplyTypeErrorOffset && rest != messageLength + 8u))
                        return $"protocol error: an error chunk whose message ({messageLength} bytes) does not fit its {length} bytes";
                    var scratch = (byte*)Unsafe.AsPointer(ref _scratch[0]);
                    if ((failed = RecvExact(scratch, (int)rest, idle: false)) != null)
                        return failed;
                    slot.Error = error != 0 ? (int)Math.Min(error, int.MaxValue) : EIO;
                    _log.Debug($"nbd {_name}: {slot.Kind} at {slot.Offset} failed on the server (error {error}): {Printable(new ReadOnlySpan<byte>(scratch, messageLength))}");
                    break;
                }
        }
        if ((flags & ReplyFlagDone) != 0)
        {
            var result = slot.Error != 0 ? -EIO
                : slot.Kind == BlkIoKind.Read && slot.Covered != slot.Length ? -EIO
                : Success(slot);
            Finish(slot, result);
        }
        return null;
    }

    private static string Printable(ReadOnlySpan<byte> text)
    {
        var s = System.Text.Encoding.UTF8.GetString(text);
        return string.Concat(s.Select(c => char.IsControl(c) ? ' ' : c));
    }

    private static int Success(Slot slot) => slot.Kind == BlkIoKind.Read ? (int)slot.Length : 0;

    /// <summary>Overflow-safe: [offset, offset + size) inside the slot's request; <paramref name="at"/> is where, relative to it.</summary>
    private static bool Within(Slot slot, ulong offset, uint size, out uint at)
    {
        at = 0;
        if (offset < slot.Offset)
            return false;
        var rel = offset - slot.Offset;
        if (rel > slot.Length || size > slot.Length - rel)
            return false;
        at = (uint)rel;
        return true;
    }

    private Slot? Find(ulong cookie)
    {
        var index = (uint)cookie;
        if (index >= Slots)
            return null;
        var slot = _slots[index];
        lock (_slotLock)
            return slot.Busy && slot.Generation == (uint)(cookie >> 32) ? slot : null;
    }

    /// <summary>Receives <paramref name="size"/> bytes into the slot's buffers, <paramref name="at"/> bytes in (checked by the caller).</summary>
    private string? RecvInto(Slot slot, uint at, uint size)
    {
        fixed (IoVec* dst = _recvIov)
        {
            var count = 0;
            var skip = (nuint)at;
            var left = (nuint)size;
            for (var i = 0; i < slot.IovCount && left > 0; i++)
            {
                var v = slot.Iov[i];
                if (skip >= v.Length)
                {
                    skip -= v.Length;
                    continue;
                }
                var take = Math.Min(v.Length - skip, left);
                dst[count++] = new IoVec(v.Base + (nint)skip, take);
                skip = 0;
                left -= take;
            }
            if (left != 0)
                return "internal error: a reply larger than the request's buffers"; // Within() makes this unreachable
            return RecvAll(dst, count, idle: false);
        }
    }

    private static void ZeroInto(Slot slot, uint at, uint size)
    {
        var skip = (nuint)at;
        var left = (nuint)size;
        for (var i = 0; i < slot.IovCount && left > 0; i++)
        {
            var v = slot.Iov[i];
            if (skip >= v.Length)
            {
                skip -= v.Length;
                continue;
            }
            var take = Math.Min(v.Length - skip, left);
            NativeMemory.Clear((void*)(v.Base + (nint)skip), take);
            skip = 0;
            left -= take;
        }
    }

    private string? RecvExact(byte* buffer, int length, bool idle)
    {
        if (length == 0)
            return null;
        var v = new IoVec((nint)buffer, (nuint)length);
        return RecvAll(&v, 1, idle);
    }

    /// <summary>Fills the iovecs; on the way, fails the connection if a request waited longer than the timeout.</summary>
    private string? RecvAll(IoVec* iov, int count, bool idle)
    {
        var lastCheck = Environment.TickCount64;
        while (count > 0)
        {
            if (_dead)
                return _deathReason ?? "closed";
            var msg = new MsgHdr { Iov = iov, IovLength = (nuint)count };
            nint n;
            try
            {
                n = Interop.RecvMsg(_fd, &msg, Interop.MSG_DONTWAIT);
            }
            catch (ObjectDisposedException)
            {
                return "closed";
            }
            if (n > 0)
            {
                Advance(ref iov, ref count, (nuint)n);
                idle = false;
                continue;
            }
            if (n == 0)
                return "the server closed the connection";
            var errno = Marshal.GetLastPInvokeError();
            if (errno == Errno.EINTR)
                continue;
            if (errno != Errno.EAGAIN)
                return $"receive failed: {Errno.Describe(errno)}";
            Span<PollFd> p = [new PollFd((int)_fd.DangerousGetHandle())];
            FdPoll.Wait(p, TickMs);
            var now = Environment.TickCount64;
            if (now - lastCheck >= TickMs && OldestAge(now) > _timeoutMs)
                return $"no reply within {_timeoutMs / 1000.0:0.#} s";
            lastCheck = now;
        }
        return null;
    }

    private long OldestAge(long now)
    {
        long oldest = 0;
        lock (_slotLock)
        {
            if (_inFlight == 0)
                return 0;
            foreach (var s in _slots)
            {
                if (s.Busy)
                    oldest = Math.Max(oldest, now - s.Started);
            }
        }
        return oldest;
    }

    private void Finish(Slot slot, int result)
    {
        CompletionPort? port;
        ushort tag;
        NbdSyncWaiter? waiter;
        lock (_slotLock)
        {
            port = slot.Port;
            tag = slot.Tag;
            waiter = slot.Waiter;
            slot.Busy = false;
            slot.Port = null;
            slot.Waiter = null;
            slot.Iov = null;
            _free[_freeCount++] = slot.Index;
            _inFlight--;
        }
        if (port != null)
            port.Post(tag, result);
        else
            waiter?.Set(result);
    }

    /// <summary>After the connection ended (receiver thread): every request still in flight fails.</summary>
    private void FailAll()
    {
        var failed = 0;
        foreach (var slot in _slots)
        {
            bool busy;
            lock (_slotLock)
                busy = slot.Busy;
            if (busy)
            {
                Finish(slot, -EIO);
                failed++;
            }
        }
        _log?.Warn($"nbd {_name}: connection lost ({_deathReason}); {failed} request{(failed == 1 ? "" : "s")} in flight failed with EIO");
    }

    /// <summary>Ends the connection and waits until every request on it has completed.</summary>
    public void Dispose()
    {
        Kill("closed");
        _receiver.Join();
        _socket.Dispose();
    }
}

/// <summary>A thread waiting for one request of the synchronous calls; one per thread, reused.</summary>
internal sealed class NbdSyncWaiter
{
    private readonly ManualResetEventSlim _done = new(false);
    private int _result;

    public void Reset() => _done.Reset();

    public void Set(int result)
    {
        _result = result;
        _done.Set();
    }

    public int Wait()
    {
        _done.Wait();
        return _result;
    }
}
