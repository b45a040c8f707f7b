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
/// side at a time reads the replies: the connection's receiver thread, or, when one queue alone
/// uses the connection and its worker has an io_uring, that worker on its own thread (see
/// <see cref="Offer"/>). It finds the request by its cookie (slot index and generation, both
/// checked), puts read data into the request's buffers (straight from the socket when much is
/// still to come), and completes the request. Any protocol break, a closed socket or a request older than the
/// timeout ends the connection: every request in flight fails with -EIO and no byte of guest
/// memory is written after that. A request completes only once both its reply (or failure) is
/// in and its sender is done with it: a reply that overtakes the send of a write's data is held
/// until the data is out, so no guest byte of a request is read or written after it completes.
/// </summary>
internal sealed unsafe class NbdConnection : IReadableWatcher, IDisposable
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
        public int Error;
        /// <summary><see cref="StateSent"/>, <see cref="StateSendFailed"/>, <see cref="StateReplied"/>; changed with Interlocked.Or.</summary>
        public int State;
        /// <summary>The result the reply brought, held while the send is still going on.</summary>
        public int Result;
        public readonly NbdReadCoverage Coverage = new();
    }

    // A request completes when the second of (sender done, result in) happens, on that thread.
    private const int StateSent = 1;        // the sender has finished with the header and data
    private const int StateSendFailed = 2;  // ... and not all of them went out
    private const int StateReplied = 4;     // the result is in: a reply, or the end of the connection

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
    private const int RxSize = 64 * 1024;  // receive buffer: holds an error chunk's largest message, and many replies
    private const int DirectMin = 16 * 1024; // read data still to come beyond this goes straight into the request's buffers
    private readonly byte[] _rx = GC.AllocateArray<byte>(RxSize, pinned: true);
    private int _rxStart, _rxEnd;             // receiving side only: the unparsed bytes of _rx
    private Slot? _data;                      // receiving side only: the read whose data is coming, where, how much is left
    private uint _dataAt, _dataLeft;
    private bool _dataCompletes, _dataDone;   // ... a simple reply (its end completes the read), a chunk with the done flag
    private readonly CompletionPort?[] _wake = new CompletionPort?[64]; // receiving side only: workers to wake before it blocks
    private const int ByThread = 0, HandOver = 1, ByWorker = 2;
    private int _receiveBy;                   // who receives: ByThread, HandOver (a worker asked), ByWorker
    private int _claimed;                     // 1 from a worker's Offer until it lets go (Released)
    private CompletionPort? _workerPort;      // the port of the worker that receives (or asked to)
    private int _workerThread;                // ... its managed thread id
    private int _firstQueue = -1;             // the first queue that started a request here
    private IQueueIo? _refusedBy;             // the last worker that could not watch the socket
    private volatile bool _shared;            // a second queue did too: the thread receives
    private int _failedAll;                   // 1 once the requests in flight at the end were failed
    private readonly ManualResetEventSlim _unpark = new(false); // wakes the thread when a worker gives the receive side back
    private int _wakeCount;
    private readonly Thread _receiver;
    private volatile bool _dead;
    private volatile string? _deathReason;
    private int _inFlight;
    private volatile bool _closing;       // Dispose: an end we asked for
    private long _lastCheck;              // receiver thread only: when it last looked for requests past the timeout

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
        BlockingReceives(socket, name);
        _receiver = new Thread(Receive) { IsBackground = true, Name = $"nbd {name}" };
        _receiver.Start();
    }

    /// <summary>
    /// The receiver blocks in recvmsg (one system call per batch of replies instead of a failed
    /// recvmsg, a poll and a recvmsg) and wakes every <see cref="TickMs"/> (SO_RCVTIMEO) to look at
    /// the clock. .NET leaves the descriptor non-blocking after its asynchronous connect; sends
    /// stay non-blocking through MSG_DONTWAIT.
    /// </summary>
    private static void BlockingReceives(Socket socket, string name)
    {
        var fd = socket.SafeHandle;
        var flags = Interop.Fcntl(fd, Interop.F_GETFL);
        var tick = new Interop.TimeVal { Seconds = 0, Microseconds = TickMs * 1000 };
        if (flags < 0 || Interop.Fcntl(fd, Interop.F_SETFL, flags & ~Interop.O_NONBLOCK) != 0
            || Interop.SetSockOpt(fd, Interop.SOL_SOCKET, Interop.SO_RCVTIMEO, &tick, (uint)sizeof(Interop.TimeVal)) != 0)
            throw new NbdException($"{name}: cannot set up the socket: {Errno.Describe(Marshal.GetLastPInvokeError())}");
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
        ulong cookie;
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
            slot.Error = 0;
            slot.State = 0;
            slot.Result = 0;
            slot.Coverage.Reset();
            cookie = ((ulong)slot.Generation << 32) | (uint)slot.Index;
            _inFlight++;
        }
        var command = kind switch
        {
            BlkIoKind.Read => CmdRead,
            BlkIoKind.Write => CmdWrite,
            BlkIoKind.Flush => CmdFlush,
            BlkIoKind.Discard => CmdTrim,
            _ => CmdWriteZeroes,
        };
        // The slot stays this request's until Sent below: a reply (or the connection's end) that
        // comes first is held in the slot, and the request completes only after the send.
        bool sent;
        EnterSend();
        try
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
                sent = SendAll(send, count);
            }
        }
        finally
        {
            _sendLock.Exit();
        }
        if (!sent)
            Kill("the connection broke while sending");
        Sent(slot, sent);
        return StartResult.Started;
    }

    /// <summary>
    /// Takes the send lock. The worker that receives the replies goes on receiving while another
    /// thread sends: that send may wait for the server, and the server for its replies to be read.
    /// </summary>
    private void EnterSend()
    {
        if (!ReceivingHere)
        {
            _sendLock.Enter();
            return;
        }
        while (!_sendLock.TryEnter())
        {
            Span<PollFd> p = [new PollFd((int)_fd.DangerousGetHandle(), PollFd.In | PollFd.RdHup)];
            if (FdPoll.Wait(p, 1) > 0)
                Pump(wakeOwnPort: true);
        }
    }

    /// <summary>
    /// The sender is done with the request's header and data. If its result is already in (a
    /// reply that overtook the data, or the connection's end), the request completes here. A
    /// request whose data did not all go out fails, whatever the server answered. (proto.md,
    /// NBD_CMD_WRITE: the server writes the data, then replies; a success before the data left us
    /// is therefore not one. It is not logged: a correct server's reply can also win the race
    /// against the return of our last sendmsg, so the order seen here proves nothing.)
    /// </summary>
    private void Sent(Slot slot, bool ok)
    {
        var before = Interlocked.Or(ref slot.State, ok ? StateSent : StateSent | StateSendFailed); // full fence: reads Result after
        if ((before & StateReplied) != 0)
            Finish(slot, ok ? slot.Result : -EIO, onReceiver: false);
    }

    /// <summary>Receiving side: the request's result is in; it completes now, or when its sender is done.</summary>
    private void Complete(Slot slot, int result)
    {
        slot.Result = result;
        var before = Interlocked.Or(ref slot.State, StateReplied); // full fence: Result is visible to the sender first
        if ((before & StateSent) != 0)
            Finish(slot, (before & StateSendFailed) != 0 ? -EIO : result, onReceiver: true);
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
                var n = Interop.SendMsg(_fd, &msg, Interop.MSG_NOSIGNAL | Interop.MSG_DONTWAIT);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Errno.EINTR)
                        continue;
                    if (errno != Errno.EAGAIN)
                        return false;
                    // The worker that receives must go on receiving while it waits to send: a server
                    // may stop reading requests until its replies are read.
                    var receiving = ReceivingHere;
                    Span<PollFd> p = [new PollFd((int)_fd.DangerousGetHandle(), receiving ? (short)(PollFd.Out | PollFd.In) : PollFd.Out)];
                    FdPoll.Wait(p, TickMs);
                    if (receiving && (p[0].ReturnedEvents & ~PollFd.Out) != 0)
                        Pump(wakeOwnPort: true);
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
        _unpark.Set();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
    }

    // ---------------- the receive side: the connection's thread, or a queue's worker ----------------
    //
    // One side at a time receives and parses replies: the receiver thread, or the worker of the
    // one queue that uses this connection, on its own thread, woken by its io_uring poll of the
    // socket (IQueueIo.TryWatch). The hand-over goes through _receiveBy: a worker asks (HandOver),
    // the thread lets go between two receives (ByWorker) and then only watches the timeout; the
    // worker gives it back when it stops, or when a second queue starts using the connection
    // (ByThread). The parse state below belongs to whichever side receives; each hand-over is a
    // full fence.

    /// <summary>
    /// A queue's worker offers to receive this connection's replies on its own thread. It is taken
    /// when this connection serves that queue alone and nobody else receives for it yet; from the
    /// second queue on, the connection's own thread receives (and a worker that had it gives it back).
    /// </summary>
    public void Offer(int queue, IQueueIo io)
    {
        var first = Volatile.Read(ref _firstQueue);
        if (first != queue)
        {
            if (first >= 0 || Interlocked.CompareExchange(ref _firstQueue, queue, -1) != -1)
            {
                _shared = true;
                return;
            }
        }
        if (_shared || _dead || Volatile.Read(ref _claimed) != 0 || ReferenceEquals(io, _refusedBy) || io.Completions is not { } port)
            return;
        if (Interlocked.CompareExchange(ref _claimed, 1, 0) != 0)
            return;
        _workerPort = port;
        _workerThread = Environment.CurrentManagedThreadId;
        if (!io.TryWatch((int)_fd.DangerousGetHandle(), this))
        {
            _refusedBy = io; // a worker without io_uring: not asked again
            _workerPort = null;
            _workerThread = 0;
            Volatile.Write(ref _claimed, 0);
            return;
        }
        Interlocked.Exchange(ref _receiveBy, HandOver); // the thread lets go at its next turn
    }

    /// <summary>Whether a queue's worker receives the replies now.</summary>
    public bool ReceivedByWorker => Volatile.Read(ref _receiveBy) == ByWorker;

    private bool ReceivingHere => Volatile.Read(ref _receiveBy) == ByWorker && _workerThread == Environment.CurrentManagedThreadId;

    /// <summary>The worker's poll saw the socket readable: receive and parse what has come, without blocking.</summary>
    bool IReadableWatcher.Readable(int events)
    {
        if (_shared || Volatile.Read(ref _failedAll) != 0)
            return false; // the worker gives the receive side back (Released)
        if (Volatile.Read(ref _receiveBy) != ByWorker)
            return true; // the thread has not let go yet; it wakes the worker's port when it does
        // After a hang-up (or not knowing), read until the end: a receive that returns data short of
        // the buffer says nothing of an end that came with it, and no later wake-up repeats it.
        Pump(wakeOwnPort: false, toTheEnd: events < 0 || (events & (PollFd.Hup | PollFd.RdHup | PollFd.Err)) != 0); // the worker takes its port right after this call
        return Volatile.Read(ref _failedAll) == 0;
    }

    /// <summary>The worker stops receiving (it stops, or gave the connection up): the thread takes over.</summary>
    void IReadableWatcher.Released()
    {
        if (Volatile.Read(ref _receiveBy) == ByWorker && _dead && Volatile.Read(ref _failedAll) == 0)
        {
            FailAll(); // the connection ended under the worker: fail what is left before letting go
            WakeWorkers(null);
        }
        Interlocked.Exchange(ref _receiveBy, ByThread);
        _workerPort = null;
        _workerThread = 0;
        Volatile.Write(ref _claimed, 0);
        _unpark.Set();
    }

    /// <summary>
    /// Receives and parses until the socket has nothing more, on the worker that receives: until
    /// a receive does not fill what it was given (all that had come was taken; anything later wakes
    /// the worker's poll again), or, <paramref name="toTheEnd"/>, until a receive finds nothing
    /// or the end. A broken stream or a closed connection fails every request in flight here.
    /// </summary>
    private void Pump(bool wakeOwnPort, bool toTheEnd = true)
    {
        string? failed;
        while (true)
        {
            failed = ReceiveSome(block: false, out var got, out var full);
            if (failed != null || got == 0)
                break;
            if ((failed = Parse()) != null || (!full && !toTheEnd))
                break;
        }
        if ((failed != null || _dead) && Volatile.Read(ref _failedAll) == 0)
        {
            failed ??= _deathReason ?? "closed";
            _deathReason ??= failed;
            Kill(failed);
            FailAll();
        }
        WakeWorkers(wakeOwnPort ? null : _workerPort);
    }

    /// <summary>
    /// Waits for a synchronous request of this thread. On the worker that receives the replies,
    /// nobody else would receive them: it receives them itself meanwhile.
    /// </summary>
    public int Wait(NbdSyncWaiter waiter)
    {
        if (Volatile.Read(ref _claimed) == 0 || _workerThread != Environment.CurrentManagedThreadId)
            return waiter.Wait(); // only this thread could make it its own, and it is here
        while (true)
        {
            var here = ReceivingHere;
            if (waiter.Wait(here ? 0 : 10, out var result))
                return result;
            if (!here)
                continue; // the thread still receives; it lets go at its next turn
            Pump(wakeOwnPort: true); // completions of this queue's asynchronous requests: the worker takes them later
            if (waiter.Wait(0, out result))
                return result;
            Span<PollFd> p = [new PollFd((int)_fd.DangerousGetHandle(), PollFd.In | PollFd.RdHup)];
            FdPoll.Wait(p, TickMs);
        }
    }

    private void Receive()
    {
        string? reason;
        try
        {
            reason = ReceiveLoop();
        }
        catch (Exception e)
        {
            reason = $"unexpected {e.GetType().Name}: {e.Message}";
        }
        if (reason is null)
            return; // the connection ended while a worker received: the worker fails what is in flight
        _deathReason ??= reason;
        Kill(reason);
        if (Volatile.Read(ref _failedAll) == 0)
            FailAll();
        WakeWorkers(null);
    }

    /// <summary>Receives replies until the connection ends; returns why, or null when it ended while a worker received.</summary>
    private string? ReceiveLoop()
    {
        while (true)
        {
            if (Volatile.Read(ref _receiveBy) != ByThread)
            {
                if (!LetWorkerReceive())
                    return null;
                continue;
            }
            var failed = ReceiveSome(block: true, out var got, out _);
            if (failed != null)
                return failed;
            if (got > 0 && (failed = Parse()) != null)
                return failed;
        }
    }

    /// <summary>
    /// The thread lets the worker that asked receive, and watches the timeout until the worker
    /// gives the receive side back (true) or the connection ends (false).
    /// </summary>
    private bool LetWorkerReceive()
    {
        WakeWorkers(null);
        var port = _workerPort;
        if (Interlocked.CompareExchange(ref _receiveBy, ByWorker, HandOver) == HandOver)
            port?.Wake(); // the worker receives from now on, starting with what came before its poll saw it
        while (true)
        {
            _unpark.Reset();
            if (Volatile.Read(ref _receiveBy) == ByThread)
                return true;
            if (_dead)
                return false;
            _unpark.Wait(TickMs);
            var now = Environment.TickCount64;
            if (now - _lastCheck >= TickMs)
            {
                _lastCheck = now;
                if (TimedOut(now) is { } reason)
                    Kill(reason); // the socket's end wakes the worker, which fails what is in flight
            }
        }
    }

    private string? TimedOut(long now) =>
        OldestAge(now, out var unsent) <= _timeoutMs ? null
        : unsent ? $"a request not fully sent within {_timeoutMs / 1000.0:0.#} s (the server stopped reading)"
        : $"no reply within {_timeoutMs / 1000.0:0.#} s";

    private byte* Rx => (byte*)Unsafe.AsPointer(ref _rx[0]); // pinned array

    private int Buffered => _rxEnd - _rxStart;

    private uint Be32(int at) => BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(Rx + _rxStart + at, 4));

    private ushort Be16(int at) => BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(Rx + _rxStart + at, 2));

    private ulong Be64(int at) => BinaryPrimitives.ReadUInt64BigEndian(new ReadOnlySpan<byte>(Rx + _rxStart + at, 8));

    /// <summary>
    /// One recvmsg: into the receive buffer, or, when a read's data is being received, nothing of it
    /// is buffered and at least <see cref="DirectMin"/> bytes of it are still to come, straight into
    /// the request's buffers. <paramref name="got"/>: bytes received (0: none yet, the receive would
    /// block, or the thread's tick); <paramref name="full"/>: they filled what the receive was given.
    /// Returns why the connection is over, or null. The thread blocks (up to <see cref="TickMs"/>,
    /// SO_RCVTIMEO) and looks at the timeout; the worker does not block.
    /// </summary>
    private string? ReceiveSome(bool block, out nint got, out bool full)
    {
        got = 0;
        full = false;
        if (block)
            WakeWorkers(null); // the receive may block: wake the workers of what completed so far
        if (_dead)
            return _deathReason ?? "closed";
        IoVec* iov;
        int count;
        nuint want;
        var direct = _data != null && Buffered == 0 && _dataLeft >= DirectMin;
        var free = default(IoVec);
        fixed (IoVec* window = _recvIov)
        {
            if (direct)
            {
                count = Window(_data!, _dataAt, _dataLeft);
                if (count < 0)
                    return "internal error: a reply larger than the request's buffers"; // Within() makes this unreachable
                iov = window;
                want = _dataLeft;
            }
            else
            {
                // Keep the partial reply at the front, so the rest of the buffer is free to fill.
                if (_rxStart > 0)
                {
                    new Span<byte>(Rx + _rxStart, Buffered).CopyTo(new Span<byte>(Rx, RxSize));
                    _rxEnd -= _rxStart;
                    _rxStart = 0;
                }
                if (_rxEnd == RxSize)
                    return "internal error: the receive buffer is full"; // no reply part waited for is larger
                free = new IoVec((nint)(Rx + _rxEnd), (nuint)(RxSize - _rxEnd));
                iov = &free;
                count = 1;
                want = free.Length;
            }
            var msg = new MsgHdr { Iov = iov, IovLength = (nuint)count };
            nint n;
            try
            {
                n = Interop.RecvMsg(_fd, &msg, block ? 0 : Interop.MSG_DONTWAIT);
            }
            catch (ObjectDisposedException)
            {
                return "closed";
            }
            if (n == 0)
                return "the server closed the connection";
            if (n < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR && errno != Errno.EAGAIN)
                    return $"receive failed: {Errno.Describe(errno)}";
            }
            if (block)
            {
                // Looked at whether bytes came or not, and across calls (the clock is a field): a server
                // that sends a byte now and then, or a reply in endless small chunks, must not hold a
                // request past the timeout.
                var now = Environment.TickCount64;
                if (now - _lastCheck >= TickMs)
                {
                    _lastCheck = now;
                    if (TimedOut(now) is { } reason)
                        return reason;
                }
            }
            if (n < 0)
                return null;
            got = n;
            full = (nuint)n == want;
            if (direct)
            {
                _dataAt += (uint)n;
                _dataLeft -= (uint)n;
            }
            else
                _rxEnd += (int)n;
            return null;
        }
    }

    /// <summary>
    /// Parses every whole reply part that is buffered; returns why the stream is broken, or null
    /// when it needs more bytes. A part is looked at only once all of its fixed fields are in (a
    /// header, a chunk's offset, an error chunk whole), so a reply split anywhere parses the same;
    /// a read's data goes into the request's buffers as it comes.
    /// </summary>
    private string? Parse()
    {
        while (true)
        {
            if (_data is { } reading)
            {
                var take = (uint)Math.Min(Buffered, _dataLeft);
                if (take > 0)
                {
                    CopyInto(reading, _dataAt, Rx + _rxStart, take);
                    _rxStart += (int)take;
                    _dataAt += take;
                    _dataLeft -= take;
                }
                if (_dataLeft > 0)
                    return null;
                _data = null;
                if (_dataCompletes)
                    Complete(reading, Success(reading));
                else if (_dataDone)
                    Done(reading);
                continue;
            }
            if (Buffered < 4)
                return null;
            var magic = Be32(0);
            string? broken;
            bool wait;
            if (magic == SimpleReplyMagic)
                broken = SimpleReply(out wait);
            else if (magic == StructuredReplyMagic && Info.Structured)
                broken = StructuredChunk(out wait);
            else
                return $"protocol error: reply magic 0x{magic:x8}";
            if (broken != null)
                return broken;
            if (wait)
                return null;
        }
    }

    /// <summary>A read's data follows: [at, at + size) of the slot's buffers (checked by the caller).</summary>
    private void ExpectData(Slot slot, uint at, uint size, bool completes, bool done)
    {
        _data = slot;
        _dataAt = at;
        _dataLeft = size;
        _dataCompletes = completes;
        _dataDone = done;
    }

    private string? SimpleReply(out bool wait)
    {
        wait = Buffered < SimpleReplySize;
        if (wait)
            return null;
        var error = Be32(4);
        var cookie = Be64(8);
        _rxStart += SimpleReplySize;
        var slot = Find(cookie);
        if (slot is null)
            return $"protocol error: a reply for cookie 0x{cookie:x}, which is not in flight";
        if (slot.Kind == BlkIoKind.Read && Info.Structured)
            return "protocol error: a simple reply to a read after structured replies were negotiated";
        if (slot.Kind == BlkIoKind.Read && error == 0)
        {
            ExpectData(slot, 0, slot.Length, completes: true, done: false);
            return null;
        }
        if (error != 0)
            _log.Debug($"nbd {_name}: {slot.Kind} at {slot.Offset} + {slot.Length} failed on the server (error {error})");
        Complete(slot, error == 0 ? Success(slot) : -EIO);
        return null;
    }

    /// <summary>Bytes of a chunk's payload that must be buffered before it is looked at (its data excepted).</summary>
    private static int FixedPayload(ushort type, uint length) => type switch
    {
        ReplyTypeOffsetData => length > 8 ? 8 : 0,
        ReplyTypeOffsetHole => length == 12 ? 12 : 0,
        _ when (type & ReplyTypeErrorBit) != 0 && length >= 6 && length <= 6 + MaxMessage + 8 => (int)length,
        _ => 0, // refused as soon as the header is in
    };

    private string? StructuredChunk(out bool wait)
    {
        wait = Buffered < StructuredReplySize
            || Buffered < StructuredReplySize + FixedPayload(Be16(6), Be32(16));
        if (wait)
            return null;
        var flags = Be16(4);
        var type = Be16(6);
        var cookie = Be64(8);
        var length = Be32(16);
        _rxStart += StructuredReplySize;
        var slot = Find(cookie);
        if (slot is null)
            return $"protocol error: a reply chunk for cookie 0x{cookie:x}, which is not in flight";
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
                    var offset = Be64(0);
                    _rxStart += 8;
                    var size = length - 8;
                    if (!Within(slot, offset, size, out var at))
                        return $"protocol error: data chunk at {offset} + {size} outside the read at {slot.Offset} + {slot.Length}";
                    Cover(slot, at, size);
                    ExpectData(slot, at, size, completes: false, done: (flags & ReplyFlagDone) != 0);
                    return null;
                }
            case ReplyTypeOffsetHole:
                {
                    if (slot.Kind != BlkIoKind.Read || length != 12)
                        return $"protocol error: a hole chunk of {length} bytes for a {slot.Kind}";
                    var offset = Be64(0);
                    var size = Be32(8);
                    _rxStart += 12;
                    if (size == 0 || !Within(slot, offset, size, out var at))
                        return $"protocol error: hole chunk at {offset} + {size} outside the read at {slot.Offset} + {slot.Length}";
                    Cover(slot, at, size);
                    ZeroInto(slot, at, size);
                    break;
                }
            default:
                {
                    if ((type & ReplyTypeErrorBit) == 0)
                        return $"protocol error: unknown reply chunk type {type}";
                    // proto.md: error chunks carry error (32), message length (16), message[, offset (64)].
                    if (length < 6 || length > 6 + MaxMessage + 8)
                        return $"protocol error: an error chunk of {length} bytes";
                    var error = Be32(0);
                    var messageLength = Be16(4);
                    var rest = length - 6;
                    if (messageLength > rest || (type == ReplyTypeErrorOffset && rest != messageLength + 8u))
                        return $"protocol error: an error chunk whose message ({messageLength} bytes) does not fit its {length} bytes";
                    // proto.md, NBD_REPLY_TYPE_ERROR_OFFSET: the offset MUST lie within the request (a
                    // flush has no range: there the type is unexpected, and only errors the reply).
                    if (type == ReplyTypeErrorOffset && slot.Kind != BlkIoKind.Flush
                        && !Within(slot, Be64(6 + messageLength), 1, out _))
                        return $"protocol error: an error offset {Be64(6 + messageLength)} outside the {slot.Kind} at {slot.Offset} + {slot.Length}";
                    var message = new ReadOnlySpan<byte>(Rx + _rxStart + 6, messageLength);
                    slot.Error = error != 0 ? (int)Math.Min(error, int.MaxValue) : EIO;
                    _log.Debug($"nbd {_name}: {slot.Kind} at {slot.Offset} failed on the server (error {error}): {Printable(message)}");
                    _rxStart += (int)length;
                    break;
                }
        }
        if ((flags & ReplyFlagDone) != 0)
            Done(slot);
        return null;
    }

    /// <summary>The request's last chunk is in: it completes with what its chunks said.</summary>
    private void Done(Slot slot)
    {
        var result = Success(slot);
        if (slot.Error != 0)
            result = -EIO;
        else if (slot.Kind == BlkIoKind.Read && !slot.Coverage.Covers(slot.Length))
        {
            _log.Warn($"nbd {_name}: read at {slot.Offset} + {slot.Length} failed: the server's chunks ended without covering the whole read (proto.md: chunks MUST cover the entire request)");
            result = -EIO;
        }
        Complete(slot, result);
    }


    /// <summary>
    /// Notes that a content chunk described [at, at + size) of the read (inside it: checked by the
    /// caller). proto.md, NBD_CMD_READ with structured replies: content chunks MUST NOT overlap
    /// an earlier one. One that does fails the read, even if the byte count adds up; the stream
    /// itself is still in step, so the connection goes on.
    /// </summary>
    private void Cover(Slot slot, uint at, uint size)
    {
        var added = slot.Coverage.Add(at, size);
        if (added == NbdReadCoverage.Result.Added || slot.Error != 0)
            return;
        slot.Error = EIO;
        var chunk = $"chunk at {slot.Offset + at} + {size}";
        _log.Warn(added == NbdReadCoverage.Result.Overlap
            ? $"nbd {_name}: read at {slot.Offset} + {slot.Length} failed: its {chunk} overlaps an earlier chunk (proto.md: content chunks MUST NOT overlap)"
            : $"nbd {_name}: read at {slot.Offset} + {slot.Length} failed: its {chunk} makes more than {NbdReadCoverage.MaxPieces} separate pieces, more than this client tracks");
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
        // A request whose result is in (held until its send ends) has had its reply: another one is not for it.
        lock (_slotLock)
            return slot.Busy && slot.Generation == (uint)(cookie >> 32) && (Volatile.Read(ref slot.State) & StateReplied) == 0 ? slot : null;
    }

    /// <summary>
    /// Fills <see cref="_recvIov"/> with the pieces of the slot's buffers that hold bytes
    /// [<paramref name="at"/>, <paramref name="at"/> + <paramref name="size"/>) of its data, and
    /// returns how many there are, or -1 when the buffers are shorter (the caller checked the
    /// range with Within(), so that cannot happen). Receiver thread only: the array is its own.
    /// </summary>
    private int Window(Slot slot, uint at, uint size)
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
            _recvIov[count++] = new IoVec(v.Base + (nint)skip, take);
            skip = 0;
            left -= take;
        }
        return left == 0 ? count : -1;
    }

    private void CopyInto(Slot slot, uint at, byte* source, uint size)
    {
        var count = Window(slot, at, size);
        for (var i = 0; i < count; i++)
        {
            var v = _recvIov[i];
            Buffer.MemoryCopy(source, (void*)v.Base, v.Length, v.Length);
            source += v.Length;
        }
    }

    private void ZeroInto(Slot slot, uint at, uint size)
    {
        var count = Window(slot, at, size);
        for (var i = 0; i < count; i++)
            NativeMemory.Clear((void*)_recvIov[i].Base, _recvIov[i].Length);
    }

    /// <summary>The age of the oldest request in flight; <paramref name="unsent"/>: its sender is not done with it yet.</summary>
    private long OldestAge(long now, out bool unsent)
    {
        long oldest = 0;
        unsent = false;
        lock (_slotLock)
        {
            if (_inFlight == 0)
                return 0;
            foreach (var s in _slots)
            {
                if (s.Busy && now - s.Started >= oldest)
                {
                    oldest = now - s.Started;
                    unsent = (Volatile.Read(ref s.State) & StateSent) == 0;
                }
            }
        }
        return oldest;
    }

    /// <summary>Completes the request (after both its send and its result): frees the slot, then tells the waiting side.</summary>
    private void Finish(Slot slot, int result, bool onReceiver)
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
        {
            // The receiving side wakes a worker once per batch of replies, not once per reply (and
            // the worker that receives takes its own port after each batch, unwoken).
            if (!onReceiver)
                port.Post(tag, result);
            else if (port.PostDeferred(tag, result, out var wake) && wake && !Defer(port))
                port.Wake();
        }
        else
            waiter?.Set(result);
    }

    /// <summary>Notes that <paramref name="port"/>'s worker must be woken; false when the list is full (wake it now).</summary>
    private bool Defer(CompletionPort port)
    {
        for (var i = 0; i < _wakeCount; i++)
        {
            if (ReferenceEquals(_wake[i], port))
                return true;
        }
        if (_wakeCount == _wake.Length)
            return false;
        _wake[_wakeCount++] = port;
        return true;
    }

    /// <summary>Wakes the workers whose ports got completions, except <paramref name="skip"/> (the worker that receives, which takes its port next).</summary>
    private void WakeWorkers(CompletionPort? skip)
    {
        for (var i = 0; i < _wakeCount; i++)
        {
            if (!ReferenceEquals(_wake[i], skip))
                _wake[i]!.Wake();
            _wake[i] = null;
        }
        _wakeCount = 0;
    }

    /// <summary>After the connection ended (the receiving side, once): every request still in flight fails.</summary>
    private void FailAll()
    {
        if (Interlocked.Exchange(ref _failedAll, 1) != 0)
            return;
        _data = null; // nothing more lands in a request's buffers
        int failed;
        lock (_slotLock)
            failed = _inFlight;
        // Said before the requests complete, so whoever sees a request fail can read why.
        var line = $"nbd {_name}: connection lost ({_deathReason}); {failed} request{(failed == 1 ? "" : "s")} in flight failed with EIO";
        if (_closing && failed == 0)
            _log.Debug($"nbd {_name}: closed");
        else
            _log.Warn(line);
        foreach (var slot in _slots)
        {
            // Only the receiving side sets Replied, so a slot seen busy and without a result stays busy until Complete.
            bool open;
            lock (_slotLock)
                open = slot.Busy && (Volatile.Read(ref slot.State) & StateReplied) == 0;
            if (open)
                Complete(slot, -EIO);
        }
    }

    /// <summary>Ends the connection and waits until every request on it has completed.</summary>
    public void Dispose()
    {
        _closing = true;
        Kill("closed");
        if (ReceivingHere)
        {
            // The worker that receives is the one closing (a reconnect it started): nobody else fails what is left.
            FailAll();
            WakeWorkers(null);
        }
        _receiver.Join();
        // A request still in its send completes as its sender leaves SendAll (it looks at _dead every TickMs).
        SpinWait.SpinUntil(() => Volatile.Read(ref _inFlight) == 0, TimeSpan.FromSeconds(10));
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

    /// <summary>Waits up to <paramref name="milliseconds"/> (0: a look); true with the result once it is in.</summary>
    public bool Wait(int milliseconds, out int result)
    {
        result = 0;
        if (!_done.Wait(milliseconds))
            return false;
        result = _result;
        return true;
    }
}
