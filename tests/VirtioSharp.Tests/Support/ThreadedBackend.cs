using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Memory;

namespace VirtioSharp.Tests.Support;

/// <summary>
/// An <see cref="IAsyncBlockBackend"/> over a memory disk whose operations complete on other
/// threads, as a storage client's do: held until the test releases them (in any order, each
/// from a thread of its own), or run at once on the thread pool after a random short delay.
/// </summary>
internal sealed unsafe class ThreadedBackend(ulong capacity, bool hold = true) : IAsyncBlockBackend
{
    public readonly record struct Op(BlkIo Io, CompletionPort Port);

    private readonly Lock _lock = new();
    private readonly List<Op> _held = [];
    private int _started;

    public MemoryBackend Disk { get; } = new(capacity);
    public ulong Capacity => Disk.Capacity;
    public uint BlockSize => 512;
    public bool ReadOnly => false;
    public bool SupportsDiscard => true;
    public bool SupportsWriteZeroes => true;
    public string Description => "threaded memory";
    /// <summary>Refuse every start: the device must do the request synchronously.</summary>
    public bool Refuse { get; set; }
    /// <summary>The errno every completion fails with; 0 for success.</summary>
    public int FailWith { get; set; }
    public int Started => Volatile.Read(ref _started);
    public int SyncCalls;

    public List<Op> Held
    {
        get
        {
            lock (_lock)
                return [.. _held];
        }
    }

    public bool TryStart(in BlkIo op, IQueueIo io)
    {
        if (Refuse || io.Completions is not { } port)
            return false;
        Interlocked.Increment(ref _started);
        var o = new Op(op, port);
        if (hold)
        {
            lock (_lock)
                _held.Add(o);
        }
        else
        {
            ThreadPool.UnsafeQueueUserWorkItem(static s =>
            {
                Thread.Sleep(Random.Shared.Next(0, 3));
                s.Backend.Complete(s.Op);
            }, (Backend: this, Op: o), preferLocal: false);
        }
        return true;
    }

    /// <summary>Does the held operation at <paramref name="index"/> and posts its completion from a new thread; returns when posted.</summary>
    public void Release(int index)
    {
        Op op;
        lock (_lock)
        {
            op = _held[index];
            _held[index] = default;
        }
        var t = new Thread(() => Complete(op));
        t.Start();
        t.Join();
    }

    /// <summary>Releases every held operation, in reverse order, all from threads of their own running at once.</summary>
    public void ReleaseAllReversed()
    {
        Op[] ops;
        lock (_lock)
        {
            ops = [.. _held.Where(o => o.Port != null)];
            _held.Clear();
        }
        var threads = ops.Reverse().Select(o => new Thread(() => Complete(o))).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
    }

    private void Complete(Op op)
    {
        var io = op.Io;
        int result;
        if (FailWith != 0)
            result = -FailWith;
        else
        {
            var ok = io.Kind switch
            {
                BlkIoKind.Read => Disk.Read(io.Offset, io.Vectors),
                BlkIoKind.Write => Disk.Write(io.Offset, io.Vectors),
                BlkIoKind.Flush => true,
                BlkIoKind.Discard => Disk.Discard(io.Offset, io.Length),
                _ => Disk.WriteZeroes(io.Offset, io.Length, (io.Flags & BlkIoFlags.MayUnmap) != 0),
            };
            result = !ok ? -5 : io.Kind == BlkIoKind.Read ? (int)io.Length : 0;
        }
        op.Port.Post(io.Tag, result);
    }

    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        Interlocked.Increment(ref SyncCalls);
        return Disk.Read(offset, iov);
    }

    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        Interlocked.Increment(ref SyncCalls);
        return Disk.Write(offset, iov);
    }

    public bool Flush() => true;
    public bool Discard(ulong offset, ulong length) => Disk.Discard(offset, length);
    public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap) => Disk.WriteZeroes(offset, length, mayUnmap);
    public void Dispose() => Disk.Dispose();
}
