using VirtioSharp.Driver;
using VirtioSharp.Native;

namespace VirtioSharp.VhostUser.Frontend;

/// <summary>
/// One virtqueue as the front-end transport sees it: the kick and call eventfds, the thread that
/// turns calls into <see cref="IInterruptHandler.OnUsedBuffers"/>, and read-only views of the
/// two ring indices (for draining and for the progress check).
/// </summary>
internal sealed unsafe class FrontendQueue : IDisposable
{
    private readonly ushort* _availIdx;
    private readonly ushort* _usedIdx;
    private readonly Func<IInterruptHandler?> _handler;
    private Thread? _thread;
    private volatile bool _stopping;

    public FrontendQueue(int index, int size, nint availRing, nint usedRing, Func<IInterruptHandler?> handler)
    {
        Index = index;
        Size = size;
        // 2.7.6 / 2.7.8: flags, then idx; a packed ring (address 0 here) has no such indices.
        _availIdx = availRing == 0 ? null : (ushort*)(availRing + 2);
        _usedIdx = usedRing == 0 ? null : (ushort*)(usedRing + 2);
        _handler = handler;
        Kick = EventFd.Create();
        Call = EventFd.Create();
    }

    public int Index { get; }
    public int Size { get; }
    public EventFd Kick { get; }
    public EventFd Call { get; }
    public bool Enabled { get; set; }

    /// <summary>Requests made available and not yet used, as the rings show them.</summary>
    public int InFlight => _availIdx == null ? 0 : (ushort)(Volatile.Read(ref *_availIdx) - Volatile.Read(ref *_usedIdx));
    public ushort UsedIndex => _usedIdx == null ? (ushort)0 : Volatile.Read(ref *_usedIdx);

    // Progress check state, touched only by the monitor thread.
    public ushort LastSeenUsed;
    public long LastProgress;

    /// <summary>Starts the thread that waits on the call eventfd.</summary>
    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = $"vhost-user-call-{Index}" };
        _thread.Start();
    }

    private void Run()
    {
        while (true)
        {
            // Poll, then read: the descriptor is shared with the back-end, which may make it non-blocking.
            Call.Wait(-1); // until the back-end (or Stop) writes the eventfd
            Call.TryRead(out _);
            if (_stopping)
                return;
            _handler()?.OnUsedBuffers(Index);
        }
    }

    /// <summary>Stops the call thread: wakes it through its own eventfd and waits for it.</summary>
    public void Stop()
    {
        if (_thread is null)
            return;
        _stopping = true;
        Call.Signal();
        if (_thread != Thread.CurrentThread)
            _thread.Join();
        _thread = null;
    }

    public void Dispose()
    {
        Stop();
        Kick.Dispose();
        Call.Dispose();
    }
}
