using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Native;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// A vhost-user back-end listening on a Unix socket for any <see cref="IVirtioDevice"/>.
/// One front-end at a time: a second simultaneous connection is refused and closed. When the
/// front-end leaves, the server waits for the next one on the same socket (QEMU's
/// <c>reconnect=</c>). Nothing a front-end sends stops the server.
/// </summary>
public class VhostUserServer : IDisposable
{
    private readonly ILogSink? _log;
    private readonly EventFd _stop = EventFd.Create();
    private readonly Lock _lock = new();
    private UnixFdSocket? _listener;
    private Thread? _acceptThread;
    private Thread? _sessionThread;
    private VhostUserSession? _session;
    private int _connections, _sessionsEnded, _refused;
    private bool _stopped;
    private bool _inherited;

    public VhostUserServer(IVirtioDevice device, string socketPath, ILogSink? log = null)
    {
        Device = device;
        SocketPath = socketPath;
        _log = log ?? device.Log;
    }

    public IVirtioDevice Device { get; }
    public string SocketPath { get; }
    /// <summary>How queue workers run file I/O; set before <see cref="Start"/>.</summary>
    public AioMode Aio { get; init; } = AioMode.Auto;
    /// <summary>Once a message has begun, how long the rest may take (and a reply may wait to be sent) before the connection is closed.</summary>
    public TimeSpan MessageTimeout { get; init; } = DefaultMessageTimeout;
    public static TimeSpan DefaultMessageTimeout => VhostUserSession.DefaultMessageTimeout;

    /// <summary>Microseconds a queue worker keeps looking at its ring after a drain before it sleeps (adapted down when it finds nothing); 0: sleep at once.</summary>
    public int PollMicroseconds { get; init; }

    /// <summary>CPUs the queue workers are pinned to, queue i to entry i mod count (null: not pinned).</summary>
    public IReadOnlyList<int>? QueueCpus { get; init; }

    /// <summary>Each queue worker's poller, kept across front-ends so its counters only grow.</summary>
    public IReadOnlyList<AdaptivePoller> Pollers => LazyInitializer.EnsureInitialized(ref _pollers, () => [.. Enumerable.Range(0, Device.NumQueues).Select(_ => new AdaptivePoller(PollMicroseconds))]);
    private AdaptivePoller[]? _pollers;

    /// <summary>Each queue worker's <see cref="CallWatchdog"/>, kept across front-ends so its count only grows.</summary>
    public IReadOnlyList<CallWatchdog> Watchdogs => LazyInitializer.EnsureInitialized(ref _watchdogs, () => [.. Enumerable.Range(0, Device.NumQueues).Select(_ => new CallWatchdog())]);
    private CallWatchdog[]? _watchdogs;

    /// <summary>Chains of <paramref name="queue"/> taken from the ring and not yet used (0 with no front-end).</summary>
    public int QueueInFlight(int queue)
    {
        VhostUserSession? session;
        lock (_lock)
            session = _session;
        return session is not null && (uint)queue < (uint)session.Vrings.Count && session.Vrings[queue].Queue is { } q ? q.InFlight : 0;
    }

    /// <summary>
    /// Where queue <paramref name="queue"/>'s ring stands, both sides, and the kicks and calls it
    /// has seen, in one line (null when the ring is not started): what a stalled guest waits for.
    /// </summary>
    public string? DescribeRing(int queue)
    {
        VhostUserSession? session;
        lock (_lock)
            session = _session;
        if (session is null || (uint)queue >= (uint)session.Vrings.Count)
            return null;
        var vring = session.Vrings[queue];
        return vring.Queue is { } q ? $"{q.DescribeRing()}; {vring.Kicks} kicks, {vring.Calls} calls" : null;
    }

    /// <summary>For crash-recovery tests only: hold each completion this long before it is used (0: off).</summary>
    public int HoldCompletionsMs { get; init; }
    protected ILogSink? Log => _log;

    /// <summary>A front-end is connected.</summary>
    public bool IsConnected { get { lock (_lock) return _session != null; } }
    /// <summary>Front-ends served so far (refused ones not counted).</summary>
    public int Connections => Volatile.Read(ref _connections);
    public int SessionsEnded => Volatile.Read(ref _sessionsEnded);
    public int Refused => Volatile.Read(ref _refused);

    /// <summary>
    /// Binds the socket and starts accepting. A stale socket file (nobody listening) is removed;
    /// a live one, or a path that is not a socket, is an <see cref="IOException"/> with one clear line.
    /// </summary>
    public void Start()
    {
        if (_listener != null)
            throw new InvalidOperationException("the server is already started");
        PrepareSocketPath(SocketPath, _log);
        try
        {
            _listener = UnixFdSocket.Listen(SocketPath);
        }
        catch (NativeCallException e)
        {
            throw new IOException($"cannot listen on {SocketPath}: {Errno.Describe(e.Errno)}", e);
        }
        StartAccepting();
        _log.Info($"vhost-user back-end listening on {SocketPath}");
    }

    /// <summary>
    /// Starts accepting on a socket that is already listening, handed over by whoever started this
    /// process (systemd socket activation). The socket stays theirs: it is closed here on
    /// <see cref="Stop"/> but its file is left in place, so connections made while no back-end
    /// runs wait in its backlog for the next one.
    /// </summary>
    public void Start(UnixFdSocket listener)
    {
        if (_listener != null)
            throw new InvalidOperationException("the server is already started");
        _listener = listener;
        _inherited = true;
        StartAccepting();
        _log.Info($"vhost-user back-end accepting on {SocketPath} (socket passed by the service manager)");
    }

    private void StartAccepting()
    {
        _acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "vhost-user accept" };
        _acceptThread.Start();
    }

    /// <summary>Makes <paramref name="path"/> free for a new listener, removing a stale socket.</summary>
    public static void PrepareSocketPath(string path, ILogSink? log)
    {
        SocketPathState state;
        try
        {
            state = UnixFdSocket.Probe(path);
        }
        catch (NativeCallException e)
        {
            throw new IOException($"socket {path} exists and cannot be checked: {Errno.Describe(e.Errno)}", e);
        }
        switch (state)
        {
            case SocketPathState.Listening:
                throw new IOException($"socket {path} is in use: another back-end is listening on it");
            case SocketPathState.NotASocket:
                throw new IOException($"{path} exists and is not a socket; refusing to replace it");
            case SocketPathState.Stale:
                File.Delete(path);
                log.Info($"removed stale socket {path} (nobody was listening)");
                break;
        }
    }

    private void AcceptLoop()
    {
        var listener = _listener!;
        bool listenRef = false, stopRef = false;
        try
        {
            listener.Handle.DangerousAddRef(ref listenRef);
            _stop.Handle.DangerousAddRef(ref stopRef);
            Span<PollFd> fds = stackalloc PollFd[2];
            while (true)
            {
                fds[0] = new PollFd(listener.Fd);
                fds[1] = new PollFd(_stop.Fd);
                FdPoll.Wait(fds, -1);
                if (fds[1].Ready)
                    return;
                if (!fds[0].Ready)
                    continue;
                UnixFdSocket connection;
                try
                {
                    connection = listener.Accept();
                }
                catch (NativeCallException e)
                {
                    _log.Warn($"accept failed: {e.Message}");
                    continue;
                }
                WaitForEndingSession();
                lock (_lock)
                {
                    if (_session != null)
                    {
                        Interlocked.Increment(ref _refused);
                        _log.Warn("refused a second front-end: one is already connected and this back-end serves one at a time");
                        connection.Dispose();
                        continue;
                    }
                    Interlocked.Increment(ref _connections);
                    _session = new VhostUserSession(Device, connection, _log, Aio, MessageTimeout, Pollers, HoldCompletionsMs, QueueCpus, Watchdogs);
                    _sessionThread = new Thread(RunSession) { IsBackground = true, Name = "vhost-user connection" };
                    _sessionThread.Start(_session);
                }
            }
        }
        catch (Exception e)
        {
            _log.Error($"accept loop stopped: {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            if (listenRef)
                listener.Handle.DangerousRelease();
            if (stopRef)
                _stop.Handle.DangerousRelease();
        }
    }

    /// <summary>
    /// A front-end that reconnects at once (after it hung up, or after we closed its connection)
    /// can arrive while the old connection's thread is still stopping its rings. Give that thread
    /// a moment to finish rather than refuse the newcomer; a front-end still being served is
    /// refused after the wait.
    /// </summary>
    private void WaitForEndingSession()
    {
        Thread? current;
        lock (_lock)
            current = _session != null ? _sessionThread : null;
        if (current is null)
            return;
        var deadline = Environment.TickCount64 + (long)ReconnectGrace.TotalMilliseconds;
        while (!Volatile.Read(ref _stopped) && !current.Join(50) && Environment.TickCount64 < deadline)
        {
        }
    }

    /// <summary>How long a new front-end waits for the previous connection to finish ending.</summary>
    public static TimeSpan ReconnectGrace { get; } = TimeSpan.FromSeconds(2);

    private void RunSession(object? state)
    {
        var session = (VhostUserSession)state!;
        _log.Info($"front-end connected ({Device.NumQueues} queue{(Device.NumQueues == 1 ? "" : "s")} offered)");
        var number = Connections;
        Device.Trace?.Event(RingEvents.Connection(number, open: true)); // a recording starts a file per front-end
        try
        {
            session.Run(_stop);
        }
        catch (Exception e)
        {
            _log.Error($"connection ended by an unexpected error: {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            try
            {
                session.Dispose();
                Device.Trace?.Event(RingEvents.Connection(number, open: false));
                OnSessionEnded();
            }
            catch (Exception e)
            {
                _log.Error($"cleaning up the connection failed: {e.GetType().Name}: {e.Message}");
            }
            lock (_lock)
                _session = null;
            Interlocked.Increment(ref _sessionsEnded);
            if (!Volatile.Read(ref _stopped))
                _log.Info($"waiting for the next front-end on {SocketPath}");
        }
    }

    /// <summary>Called on the connection's thread after a front-end left and its rings stopped.</summary>
    protected virtual void OnSessionEnded() { }

    /// <summary>Called once by <see cref="Stop"/> after the last connection ended (if the server had started).</summary>
    protected virtual void OnStopped() { }

    /// <summary>Closes the connection (stopping its rings), stops listening and removes the socket file.</summary>
    public void Stop()
    {
        lock (_lock)
        {
            if (_stopped)
                return;
            _stopped = true;
        }
        _stop.Signal();
        _acceptThread?.Join();
        Thread? sessionThread;
        lock (_lock)
            sessionThread = _sessionThread;
        sessionThread?.Join();
        if (_listener != null)
        {
            _listener.Dispose();
            if (_inherited)
                _log.Info($"stopped accepting on {SocketPath}; the service manager keeps the socket open");
            else
            {
                try
                {
                    if (FileStatus.KindOf(SocketPath) == FileKind.Socket)
                        File.Delete(SocketPath);
                }
                catch (IOException) { }
                _log.Info($"stopped listening on {SocketPath}");
            }
            OnStopped();
        }
    }

    public void Dispose()
    {
        Stop();
        _stop.Dispose();
        GC.SuppressFinalize(this);
    }
}
