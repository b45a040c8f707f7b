using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using VirtioSharp.Memory;

namespace VirtioSharp.Tests.Nbd;

/// <summary>
/// A scripted NBD server on a Unix socket, written here so that it can break the protocol on
/// purpose (NBD proto.md: fixed newstyle handshake, simple and structured replies). Each
/// accepted connection runs the script chosen for its number (0 for the first) on a thread of
/// its own; disposing closes everything and waits for the scripts.
/// </summary>
internal sealed class FakeNbdServer : IDisposable
{
    private readonly Socket _listener;
    private readonly Func<int, Action<FakeNbdPeer>> _script;
    private readonly List<(Thread Thread, Socket Socket)> _connections = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private int _accepted;

    /// <param name="backlog">The listen(2) backlog: with 0, one connection waits and the next connect finds the queue full.</param>
    /// <param name="acceptFrom">Accepting starts when this completes (none: at once); connections queue until then.</param>
    public FakeNbdServer(string path, Func<int, Action<FakeNbdPeer>> script, int backlog = 16, Task? acceptFrom = null)
    {
        _script = script;
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(backlog);
        Uri = $"nbd+unix:///disk?socket={path}";
        Path = path;
        _accepting = Task.Run(async () =>
        {
            if (acceptFrom is not null)
                await acceptFrom;
            await AcceptLoop();
        });
    }

    public string Path { get; }

    public string Uri { get; }
    public int Accepted => Volatile.Read(ref _accepted);
    public CancellationToken Stopping => _stop.Token;

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            var number = Interlocked.Increment(ref _accepted) - 1;
            var script = _script(number);
            var peer = new FakeNbdPeer(client, _stop.Token);
            var thread = new Thread(() =>
            {
                try
                {
                    script(peer);
                }
                catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException or OperationCanceledException)
                {
                    // The client hung up or the test ended: that is how most scripts end.
                }
            })
            { IsBackground = true, Name = $"fake nbd #{number}" };
            lock (_connections)
                _connections.Add((thread, client));
            thread.Start();
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Dispose();
        _accepting.Wait(TimeSpan.FromSeconds(5));
        lock (_connections)
        {
            foreach (var (_, socket) in _connections)
            {
                try
                {
                    socket.Shutdown(SocketShutdown.Both);
                }
                catch (SocketException)
                {
                }
                socket.Dispose();
            }
            foreach (var (thread, _) in _connections)
                thread.Join(TimeSpan.FromSeconds(5));
        }
    }
}

/// <summary>One request as the fake server read it.</summary>
internal readonly record struct NbdRequest(ushort Flags, ushort Type, ulong Cookie, ulong Offset, uint Length, byte[] Data);

/// <summary>The server's end of one connection: big-endian fields of proto.md, written and read whole.</summary>
internal sealed class FakeNbdPeer(Socket socket, CancellationToken stopping)
{
    public const ulong InitMagic = 0x4e42444d41474943, OptMagic = 0x49484156454F5054, OptReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513, SimpleMagic = 0x67446698, StructuredMagic = 0x668e33ef;
    public const uint OptGo = 7, OptStructuredReply = 8, RepAck = 1, RepInfo = 3, RepErrUnsup = 0x80000001, RepErrUnknown = 0x80000006;
    public const ushort TxHasFlags = 1, TxSendFlush = 4, ChunkDone = 1, ChunkNone = 0, ChunkData = 1, ChunkHole = 2, ChunkError = 0x8001, ChunkErrorOffset = 0x8002;
    public const ushort CmdRead = 0, CmdWrite = 1, CmdDisc = 2;

    public Socket Socket => socket;

    /// <summary>The export's bytes as the well-behaved server serves them.</summary>
    public static byte Content(ulong offset) => (byte)(offset * 7 + 3);

    public void Send(ReadOnlySpan<byte> bytes)
    {
        while (bytes.Length > 0)
            bytes = bytes[socket.Send(bytes)..];
    }

    public byte[] Receive(int length)
    {
        var b = new byte[length];
        var got = 0;
        while (got < length)
        {
            var n = socket.Receive(b, got, length - got, SocketFlags.None);
            if (n == 0)
                throw new IOException("the client closed the connection");
            got += n;
        }
        return b;
    }

    /// <summary>Reads and drops whatever the client sends until it hangs up (or the test ends).</summary>
    public void DrainUntilClosed()
    {
        var b = new byte[65536];
        socket.ReceiveTimeout = 200;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                if (socket.Receive(b) == 0)
                    return;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
            {
            }
        }
    }

    /// <summary>Waits, sending nothing, until the test ends.</summary>
    public void Silence() => stopping.WaitHandle.WaitOne();

    public static byte[] Be64(ulong v)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, v);
        return b;
    }

    public static byte[] Be32(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return b;
    }

    public static byte[] Be16(ushort v)
    {
        var b = new byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(b, v);
        return b;
    }

    public static byte[] Cat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    public void Greet(ushort flags = 3) => Send(Cat(Be64(InitMagic), Be64(OptMagic), Be16(flags)));

    /// <summary>The client's flags after the greeting.</summary>
    public uint ClientFlags() => BinaryPrimitives.ReadUInt32BigEndian(Receive(4));

    public (uint Option, byte[] Data) ReadOption()
    {
        var h = Receive(16);
        if (BinaryPrimitives.ReadUInt64BigEndian(h) != OptMagic)
            throw new IOException("bad option magic from the client");
        var option = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8));
        var length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12));
        return (option, Receive((int)length));
    }

    public void OptionReply(uint option, uint type, ReadOnlySpan<byte> data) =>
        Send(Cat(Be64(OptReplyMagic), Be32(option), Be32(type), Be32((uint)data.Length), data.ToArray()));

    public static byte[] ExportInfo(ulong size, ushort flags) => Cat(Be16(0), Be64(size), Be16(flags));

    public static byte[] BlockSizeInfo(uint min, uint preferred, uint max) => Cat(Be16(3), Be32(min), Be32(preferred), Be32(max));

    /// <summary>Greeting, structured replies (ACK, or refused), NBD_OPT_GO answered with <paramref name="info"/> and ACK.</summary>
    public void Handshake(ulong size = 1 << 20, ushort flags = TxHasFlags | TxSendFlush, bool structured = true, params byte[][] extraInfo)
    {
        Greet();
        ClientFlags();
        while (true)
        {
            var (option, _) = ReadOption();
            if (option == OptStructuredReply)
                OptionReply(option, structured ? RepAck : RepErrUnsup, []);
            else if (option == OptGo)
            {
                OptionReply(option, RepInfo, ExportInfo(size, flags));
                foreach (var info in extraInfo)
                    OptionReply(option, RepInfo, info);
                OptionReply(option, RepAck, []);
                return;
            }
            else
                OptionReply(option, RepErrUnsup, []);
        }
    }

    public NbdRequest ReadRequest()
    {
        var r = ReadRequestHeader();
        return r.Type == CmdWrite ? r with { Data = Receive((int)r.Length) } : r;
    }

    /// <summary>A request's 28-byte header only: a write's data is left in the socket.</summary>
    public NbdRequest ReadRequestHeader()
    {
        var h = Receive(28);
        if (BinaryPrimitives.ReadUInt32BigEndian(h) != RequestMagic)
            throw new IOException("bad request magic from the client");
        var flags = BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(4));
        var type = BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(6));
        var cookie = BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(8));
        var offset = BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(16));
        var length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(24));
        return new NbdRequest(flags, type, cookie, offset, length, []);
    }

    public static byte[] SimpleReply(ulong cookie, uint error = 0) => Cat(Be32(SimpleMagic), Be32(error), Be64(cookie));

    /// <summary>A structured chunk header that declares <paramref name="length"/> payload bytes (true or not).</summary>
    public static byte[] ChunkHeader(ushort flags, ushort type, ulong cookie, uint length) =>
        Cat(Be32(StructuredMagic), Be16(flags), Be16(type), Be64(cookie), Be32(length));

    public static byte[] Contents(ulong offset, int length)
    {
        var b = new byte[length];
        for (var i = 0; i < length; i++)
            b[i] = Content(offset + (ulong)i);
        return b;
    }

    /// <summary>A well-formed NBD_REPLY_TYPE_OFFSET_HOLE chunk.</summary>
    public static byte[] HoleChunk(ushort flags, ulong cookie, ulong offset, uint length) =>
        Cat(ChunkHeader(flags, ChunkHole, cookie, 12), Be64(offset), Be32(length));

    /// <summary>A well-formed NBD_REPLY_TYPE_OFFSET_DATA chunk with the export's bytes.</summary>
    public static byte[] DataChunk(ushort flags, ulong cookie, ulong offset, int length) =>
        Cat(ChunkHeader(flags, ChunkData, cookie, (uint)length + 8), Be64(offset), Contents(offset, length));

    /// <summary>Answers one request as a correct server does.</summary>
    public void Answer(NbdRequest r)
    {
        if (r.Type == CmdRead)
            Send(DataChunk(ChunkDone, r.Cookie, r.Offset, (int)r.Length));
        else
            Send(SimpleReply(r.Cookie));
    }

    /// <summary>A correct server from the handshake on, until the client disconnects.</summary>
    public void Serve(ulong size = 1 << 20)
    {
        Handshake(size);
        ServeRequests();
    }

    public void ServeRequests()
    {
        while (true)
        {
            var r = ReadRequest();
            if (r.Type == CmdDisc)
                return;
            Answer(r);
        }
    }
}

/// <summary>
/// Native memory laid out as [guard page][piece A][gap][piece B][guard page], every byte outside
/// A and B holding a known value, so that any byte written outside the request's two buffers shows.
/// </summary>
internal sealed unsafe class GuardedBuffer : IDisposable
{
    private const int Guard = 4096, Gap = 512;
    private const byte Fill = 0xA5;
    private readonly byte* _memory;
    private readonly int _pieceA, _pieceB, _total;

    public GuardedBuffer(int pieceA, int pieceB)
    {
        _pieceA = pieceA;
        _pieceB = pieceB;
        _total = Guard + pieceA + Gap + pieceB + Guard;
        _memory = (byte*)NativeMemory.AlignedAlloc((nuint)_total, 4096);
        new Span<byte>(_memory, _total).Fill(Fill);
    }

    public IoVec[] Iov =>
    [
        new IoVec((nint)(_memory + Guard), (nuint)_pieceA),
        new IoVec((nint)(_memory + Guard + _pieceA + Gap), (nuint)_pieceB),
    ];

    public int Length => _pieceA + _pieceB;

    /// <summary>The request's bytes: piece A then piece B.</summary>
    public byte[] Data =>
    [
        .. new ReadOnlySpan<byte>(_memory + Guard, _pieceA),
        .. new ReadOnlySpan<byte>(_memory + Guard + _pieceA + Gap, _pieceB),
    ];

    /// <summary>Writes <paramref name="data"/> (<see cref="Length"/> bytes) into piece A then piece B, as a guest reusing its buffer does.</summary>
    public void Write(ReadOnlySpan<byte> data)
    {
        data[.._pieceA].CopyTo(new Span<byte>(_memory + Guard, _pieceA));
        data.Slice(_pieceA, _pieceB).CopyTo(new Span<byte>(_memory + Guard + _pieceA + Gap, _pieceB));
    }

    /// <summary>Where the first byte outside the two pieces differs from the fill, or -1.</summary>
    public int FirstChangedOutside()
    {
        var all = new ReadOnlySpan<byte>(_memory, _total);
        ReadOnlySpan<(int Start, int Length)> outside =
        [
            (0, Guard),
            (Guard + _pieceA, Gap),
            (Guard + _pieceA + Gap + _pieceB, Guard),
        ];
        foreach (var (start, length) in outside)
        {
            var at = all.Slice(start, length).IndexOfAnyExcept(Fill);
            if (at >= 0)
                return start + at;
        }
        return -1;
    }

    public void Dispose() => NativeMemory.AlignedFree(_memory);
}
