using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Frontend;

/// <summary>Watching the connection: hang-up and progress, and what happens when the back-end is gone.</summary>
public sealed unsafe partial class VhostUserFrontendTransport
{
    // ---------------------------------------------------------------- loss detection

    /// <summary>
    /// Watches the socket for hang-up (the back-end went away) and, once a second, every queue for
    /// progress: requests outstanding and the used index unchanged for too long means a stuck back-end.
    /// </summary>
    private void Monitor()
    {
        Span<PollFd> fds = stackalloc PollFd[2];
        var progressMs = (long)_options.ProgressTimeout.TotalMilliseconds;
        while (!_disposed && _lost is null)
        {
            // Only hang-up on the socket: replies are read by the control path, never here.
            fds[0] = new PollFd(_channel.Socket.Fd, PollFd.RdHup);
            fds[1] = new PollFd(_monitorWake.Fd);
            int n;
            try
            {
                n = FdPoll.Wait(fds, 1000);
            }
            catch (NativeCallException e)
            {
                Lose($"vhost-user connection failed: {e.Message}");
                return;
            }
            if (_disposed)
                return;
            if (n > 0 && fds[0].Ready)
            {
                const string closed = "vhost-user back-end closed the connection";
                if (TryReconnect(closed))
                    continue;
                Lose(_reconnectFailure ?? closed);
                return;
            }
            if (progressMs <= 0)
                continue;
            var now = Environment.TickCount64;
            foreach (var q in _queues)
            {
                if (q is null)
                    continue;
                var used = q.UsedIndex;
                var inFlight = q.InFlight;
                if (used != q.LastSeenUsed || inFlight == 0)
                {
                    q.LastSeenUsed = used;
                    q.LastProgress = now;
                }
                else if (now - q.LastProgress > progressMs)
                {
                    Lose($"vhost-user back-end made no progress on queue {q.Index} for {_options.ProgressTimeout.TotalSeconds:0.#} s with {inFlight} requests outstanding");
                    return;
                }
            }
        }
    }

    /// <summary>Records that the back-end is gone, tells the driver once, and returns an exception to throw.</summary>
    private VhostUserException Lose(string reason)
    {
        if (_reconnecting)
            return new VhostUserException(reason); // the reconnect loop decides whether this is the end
        var first = Interlocked.CompareExchange(ref _lost, reason, null) is null;
        if (first && !_disposed)
        {
            _options.Log.Error(reason);
            _channel.Socket.Shutdown();
            _handler?.OnDeviceLost(reason);
        }
        return new VhostUserException(_lost ?? reason);
    }
}
