using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using static VirtioSharp.Block.Nbd.NbdProtocol;

namespace VirtioSharp.Block.Nbd;

/// <summary>Settings of an NBD backend.</summary>
public sealed record NbdOptions
{
    /// <summary>Connections to open (multi-conn); more than one only when the server sets NBD_FLAG_CAN_MULTI_CONN.</summary>
    public int Connections { get; init; } = 1;
    /// <summary>A request without a reply for this long ends its connection, and it and every other request on it fail with EIO.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How long connecting and negotiating may take, at start and on reconnect.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    public bool ReadOnly { get; init; }
    public ILogSink? Log { get; init; }
}

/// <summary>
/// A disk on an NBD server (NBD proto.md): many requests of every queue in flight on one or
/// more connections. A connection that one queue alone uses is received from by that queue's
/// worker, on its own thread, when the worker has an io_uring to wait in; otherwise the
/// connection's receiver thread completes requests through each queue's <see cref="CompletionPort"/>. Reads and writes go between guest memory and the socket
/// without a bounce buffer. FLUSH, TRIM, WRITE_ZEROES and FUA are used when the server offers
/// them. A lost connection fails its requests with EIO; the next request reconnects (at most
/// one attempt a second per connection).
/// </summary>
public sealed unsafe class NbdBackend : IAsyncBlockBackend
{
    private const int EIO = 5;
    private readonly NbdUri _uri;
    private readonly NbdOptions _options;
    private readonly NbdConnection?[] _connections;
    private readonly long[] _nextAttempt;
    private readonly Lock _reconnectLock = new();
    private readonly NbdExportInfo _info;
    [ThreadStatic] private static NbdSyncWaiter? t_waiter;

    private NbdBackend(NbdUri uri, NbdOptions options, NbdConnection[] connections)
    {
        _uri = uri;
        _options = options;
        _connections = connections;
        _nextAttempt = new long[connections.Length];
        _info = connections[0].Info;
        Capacity = _info.Size & ~(ulong)(BlkLayout.SectorSize - 1);
        BlockSize = Math.Max(BlkLayout.SectorSize, _info.MinBlock);
        ReadOnly = options.ReadOnly || _info.Has(TxReadOnly);
    }

    /// <summary>Connects and negotiates; throws <see cref="NbdException"/> (one line) when the server cannot be used.</summary>
    public static NbdBackend Open(NbdUri uri, NbdOptions? options = null)
    {
        options ??= new NbdOptions();
        if (options.Connections is < 1 or > 64)
            throw new NbdException($"--nbd-connections must be 1..64, not {options.Connections}");
        var first = Connect(uri, options, 0);
        var info = first.Info;
        if (info.Size < BlkLayout.SectorSize)
        {
            first.Dispose();
            throw new NbdException($"{uri}: the export is {info.Size} bytes; it must hold at least one 512-byte sector");
        }
        var count = options.Connections;
        if (count > 1 && !info.Has(TxCanMultiConn))
        {
            options.Log.Warn($"{uri}: the server does not allow multi-conn (NBD_FLAG_CAN_MULTI_CONN); using one connection, not {count}");
            count = 1;
        }
        var connections = new NbdConnection[count];
        connections[0] = first;
        try
        {
            for (var i = 1; i < count; i++)
            {
                connections[i] = Connect(uri, options, i);
                if (connections[i].Info.Size != info.Size || connections[i].Info.Flags != info.Flags)
                    throw new NbdException($"{uri}: connection {i} sees a different export (size or flags changed)");
            }
        }
        catch
        {
            foreach (var c in connections)
                c?.Dispose();
            throw;
        }
        return new NbdBackend(uri, options, connections);
    }

    private static NbdConnection Connect(NbdUri uri, NbdOptions options, int index)
    {
        var socket = NbdHandshake.Connect(uri, options.ConnectTimeout, out var info);
        try
        {
            return new NbdConnection(socket, info, $"{uri} #{index}", options.Timeout, options.Log);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public ulong Capacity { get; }
    public uint BlockSize { get; }
    public bool ReadOnly { get; }
    public bool SupportsDiscard => !ReadOnly && _info.Has(TxSendTrim);
    public bool SupportsWriteZeroes => !ReadOnly && _info.Has(TxSendWriteZeroes);
    public string Description => $"NBD export {_uri}{(_connections.Length > 1 ? $" ({_connections.Length} connections)" : "")}";
    public NbdExportInfo Export => _info;
    public int Connections => _connections.Length;

    /// <summary>How many connections a queue's worker receives from now (the others: their own thread).</summary>
    public int ReceivedByWorkers => _connections.Count(c => c is { ReceivedByWorker: true });

    /// <summary>Connection <paramref name="index"/>, reconnected if it died and an attempt is due; null while it is down.</summary>
    private NbdConnection? Connection(int index)
    {
        var c = Volatile.Read(ref _connections[index]);
        if (c is { Dead: false })
            return c;
        lock (_reconnectLock)
        {
            c = _connections[index];
            if (c is { Dead: false })
                return c;
            var now = Environment.TickCount64;
            if (now < _nextAttempt[index])
                return null;
            _nextAttempt[index] = now + 1000;
            try
            {
                var fresh = Connect(_uri, _options with { Log = null }, index);
                if (fresh.Info.Size != _info.Size || fresh.Info.Flags != _info.Flags)
                {
                    fresh.Dispose();
                    _options.Log.Warn($"{_uri}: reconnected, but the export changed (size or flags); not using it");
                    return null;
                }
                c?.Dispose(); // dead: its receiver has failed everything and left
                Volatile.Write(ref _connections[index], fresh);
                _options.Log.Info($"{_uri}: connection {index} re-established");
                return fresh;
            }
            catch (NbdException e)
            {
                _options.Log.Warn($"connection {index}: reconnect failed (next attempt in 1 s): {e.Message}"); // at most once a second
                return null;
            }
        }
    }

    private bool TryCommand(in BlkIo op, out ushort flags)
    {
        flags = 0;
        switch (op.Kind)
        {
            case BlkIoKind.Read:
                return op.Length <= _info.MaxBlock;
            case BlkIoKind.Write:
                if (ReadOnly || op.Length > _info.MaxBlock)
                    return false;
                if ((op.Flags & BlkIoFlags.Fua) != 0 && _info.Has(TxSendFlush))
                {
                    if (!_info.Has(TxSendFua))
                        return false; // write, then flush: the synchronous path does both
                    flags = CmdFlagFua;
                }
                return true;
            case BlkIoKind.Flush:
                return true;
            case BlkIoKind.Discard:
                return SupportsDiscard;
            case BlkIoKind.WriteZeroes:
                if (!SupportsWriteZeroes)
                    return false;
                if ((op.Flags & BlkIoFlags.MayUnmap) == 0)
                    flags = CmdFlagNoHole;
                return true;
            default:
                return false;
        }
    }

    public bool TryStart(in BlkIo op, IQueueIo io)
    {
        if (io.Completions is not { } port || !TryCommand(op, out var flags))
            return false;
        if (op.Kind == BlkIoKind.Flush && !_info.Has(TxSendFlush))
        {
            port.Post(op.Tag, 0); // nothing to make stable: the server offers no flush
            return true;
        }
        var index = op.Queue % _connections.Length;
        var c = Connection(index);
        c?.Offer(op.Queue, io); // a connection this queue alone uses: its worker receives the replies itself
        var started = c?.Start(op.Kind, flags, op.Offset, op.Length, op.Iov, op.IovCount, port, op.Tag, null) ?? NbdConnection.StartResult.Dead;
        switch (started)
        {
            case NbdConnection.StartResult.Started:
                return true;
            case NbdConnection.StartResult.NoSlot:
                return false;
            default:
                port.Post(op.Tag, -EIO); // the server is unreachable: fail now, try again on the next request
                return true;
        }
    }

    // ---------------- synchronous fallback (the in-process machine, and what TryStart refuses) ----------------

    private bool Run(BlkIoKind kind, ushort flags, ulong offset, uint length, IoVec* iov, int count)
    {
        var waiter = t_waiter ??= new NbdSyncWaiter();
        var spins = 0;
        while (true)
        {
            var c = Connection(spins % _connections.Length);
            if (c is null)
                return false;
            waiter.Reset();
            var r = c.Start(kind, flags, offset, length, iov, count, null, 0, waiter);
            if (r == NbdConnection.StartResult.Started)
                return c.Wait(waiter) >= 0;
            if (r == NbdConnection.StartResult.Dead)
                return false;
            Thread.Sleep(1); // every slot busy: wait for one
            spins++;
        }
    }

    /// <summary>Reads or writes in pieces of at most the server's maximum payload.</summary>
    private bool Transfer(BlkIoKind kind, ushort flags, ulong offset, ReadOnlySpan<IoVec> iov)
    {
        var max = (nuint)Math.Min(_info.MaxBlock, 32u << 20);
        var piece = new IoVec[Math.Min(iov.Length, 1024)];
        var index = 0;
        nuint skip = 0;
        while (index < iov.Length)
        {
            var n = 0;
            nuint total = 0;
            while (index < iov.Length && n < piece.Length && total < max)
            {
                var take = Math.Min(iov[index].Length - skip, max - total);
                piece[n++] = new IoVec(iov[index].Base + (nint)skip, take);
                total += take;
                skip += take;
                if (skip == iov[index].Length)
                {
                    index++;
                    skip = 0;
                }
            }
            if (total == 0)
                continue;
            fixed (IoVec* p = piece)
            {
                if (!Run(kind, flags, offset, (uint)total, p, n))
                    return false;
            }
            offset += total;
        }
        return true;
    }

    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov) => Transfer(BlkIoKind.Read, 0, offset, iov);

    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov) => !ReadOnly && Transfer(BlkIoKind.Write, 0, offset, iov);

    public string? FlushIgnored => _info.Has(TxSendFlush) ? null : "the NBD server offers no flush";

    public bool Flush() => !_info.Has(TxSendFlush) || Run(BlkIoKind.Flush, 0, 0, 0, null, 0);

    public bool Discard(ulong offset, ulong length) => SupportsDiscard && Ranges(BlkIoKind.Discard, 0, offset, length);

    public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap) =>
        SupportsWriteZeroes && Ranges(BlkIoKind.WriteZeroes, mayUnmap ? (ushort)0 : CmdFlagNoHole, offset, length);

    private bool Ranges(BlkIoKind kind, ushort flags, ulong offset, ulong length)
    {
        const ulong max = 1u << 30; // keep each request's 32-bit length well inside its range
        while (length > 0)
        {
            var n = Math.Min(length, max);
            if (!Run(kind, flags, offset, (uint)n, null, 0))
                return false;
            offset += n;
            length -= n;
        }
        return true;
    }

    public void Dispose()
    {
        for (var i = 0; i < _connections.Length; i++)
            _connections[i]?.Dispose();
    }
}
