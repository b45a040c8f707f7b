using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Frontend;

/// <summary>
/// Reaching a back-end anew after the old one went away (crashed, killed, restarted for an
/// upgrade), as QEMU's reconnect=1 does for a guest. Guest memory is ours, so the rings, the
/// request headers and the data survive in it; what the new back-end needs is the connection
/// set up again: features, the memory table, and each ring, which the driver first starts afresh
/// with its outstanding requests made available again (<see cref="IDeviceRestartHandler"/>).
/// </summary>
public sealed unsafe partial class VhostUserFrontendTransport
{
    private string? _reconnectFailure;

    /// <summary>Counts of reconnects that succeeded, for the caller's report.</summary>
    public int Reconnects => Volatile.Read(ref _reconnects);
    private int _reconnects;

    /// <summary>Requests made available again to a new back-end, over all reconnects.</summary>
    public long Resubmitted => Interlocked.Read(ref _resubmitted);
    private long _resubmitted;

    /// <summary>A failure that waiting cannot cure (the new back-end offers less than was negotiated).</summary>
    private sealed class IncompatibleException(string message) : Exception(message);

    /// <summary>
    /// On the monitor thread, after a hang-up: tries, until <see cref="VhostUserFrontendOptions.ReconnectTimeout"/>,
    /// to connect and set everything up again. False (with <see cref="_reconnectFailure"/>) when it gave up.
    /// </summary>
    private bool TryReconnect(string reason)
    {
        _reconnectFailure = null;
        var timeout = _options.ReconnectTimeout;
        if (timeout <= TimeSpan.Zero || _closing || _lost is not null || _handler is not IDeviceRestartHandler restart)
            return false;
        var clock = Stopwatch.StartNew();
        Say($"{reason}; reconnecting to {SocketPath} (for up to {timeout.TotalSeconds:0.#} s)");
        lock (_control)
        {
            _reconnecting = true;
            try
            {
                _channel.Socket.Shutdown();
                var last = reason;
                var nextNote = TimeSpan.FromSeconds(2);
                while (true)
                {
                    if (_closing)
                    {
                        _reconnectFailure = $"{reason}; stopped reconnecting: the front-end is closing";
                        return false;
                    }
                    if (clock.Elapsed >= timeout)
                    {
                        _reconnectFailure = $"{reason}; no back-end came back on {SocketPath} within {timeout.TotalSeconds:0.#} s (last: {last})";
                        return false;
                    }
                    if (clock.Elapsed >= nextNote)
                    {
                        Say($"still waiting for a back-end on {SocketPath} ({clock.Elapsed.TotalSeconds:0} s; last: {last})");
                        nextNote += TimeSpan.FromSeconds(2);
                    }
                    try
                    {
                        var resubmitted = Reestablish(restart);
                        Interlocked.Increment(ref _reconnects);
                        Interlocked.Add(ref _resubmitted, resubmitted);
                        Say($"reconnected to {SocketPath} after {clock.Elapsed.TotalSeconds:0.0} s; {resubmitted} outstanding request{(resubmitted == 1 ? "" : "s")} made available again");
                        return true;
                    }
                    catch (IncompatibleException e)
                    {
                        _reconnectFailure = $"{reason}; the back-end that came back cannot take over: {e.Message}";
                        return false;
                    }
                    catch (Exception e) when (e is VhostUserException or BusyException or Native.NativeCallException)
                    {
                        last = e.Message;
                        Thread.Sleep(100);
                    }
                }
            }
            finally
            {
                _reconnecting = false;
            }
        }
    }

    private void Say(string line)
    {
        _options.Log.Warn(line);
        _options.OnReconnect?.Invoke(line);
    }

    /// <summary>One attempt: a new connection, the handshake, the features and memory as before, then each ring.</summary>
    private int Reestablish(IDeviceRestartHandler restart)
    {
        var channel = Open(SocketPath);
        channel.Socket.SetTimeouts(_options.ReplyTimeout);
        var old = _channel;
        _channel = channel;
        old.Dispose();
        _peerClosed = false;
        Handshake();
        var offered = GetDeviceFeatures();
        if ((_driverFeatures & ~offered) != 0)
            throw new IncompatibleException($"it does not offer features 0x{_driverFeatures & ~offered:x} ({BlkFeatures.Describe(_driverFeatures & ~offered)}) that were negotiated");
        var rings = 0;
        foreach (var q in _queues)
        {
            if (q is not null)
                rings = q.Index + 1;
        }
        if (BackendQueueCount is { } count && count < rings)
            throw new IncompatibleException($"it has {count} queue(s); {rings} are in use");
        SendU64(VhostUserRequest.SetFeatures, _driverFeatures | (BackendFeatures & VhostUserFeatures.ProtocolFeatures), ack: true);
        if (!HasProtocolFeature(VhostUserFeatures.ReplyAck))
            RequestU64(VhostUserRequest.GetFeatures); // a request with a reply shows SET_FEATURES arrived
        SendMemoryTable();
        var resubmitted = 0;
        Span<byte> payload = stackalloc byte[VringState.Length];
        foreach (var q in _queues)
        {
            if (q is null)
                continue;
            // The old back-end is gone, so nothing writes this ring: the driver completes what it
            // finished, starts the ring afresh and places what is outstanding, then the new one takes it.
            resubmitted += restart.RestartQueue(q.Index);
            SendRing(q);
            if (q.Enabled && ProtocolFeaturesNegotiated)
            {
                new VringState((uint)q.Index, 1).Write(payload);
                Send(VhostUserRequest.SetVringEnable, payload, ack: true);
            }
            q.LastSeenUsed = q.UsedIndex;
            q.LastProgress = Environment.TickCount64;
            q.Kick.Signal(); // the requests placed again are waiting
        }
        return resubmitted;
    }
}
