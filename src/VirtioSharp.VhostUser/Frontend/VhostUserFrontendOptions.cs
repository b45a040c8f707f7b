using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Frontend;

/// <summary>How the front-end connects to and drives a vhost-user back-end.</summary>
public sealed record VhostUserFrontendOptions
{
    /// <summary>Default shared memory: rings, request headers, bounce buffers and any direct data buffers.</summary>
    public const ulong DefaultMemorySize = 64UL << 20;

    /// <summary>Bytes of shared memory (rounded up to 4 KiB) the driver allocates from; the back-end maps all of it.</summary>
    public ulong MemorySize { get; init; } = DefaultMemorySize;

    /// <summary>Virtio device ID the back-end implements (vhost-user does not say; 2 = block).</summary>
    public uint DeviceId { get; init; } = 2;

    /// <summary>How long to wait for each reply on the control socket.</summary>
    public TimeSpan ReplyTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Requests outstanding on a queue with no used-ring progress for this long make the device
    /// count as lost (every outstanding request fails). <see cref="TimeSpan.Zero"/> disables the check.
    /// </summary>
    public TimeSpan ProgressTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long stopping waits for in-flight requests to come back before giving up on them.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// When the back-end goes away (hangs up), how long to keep trying to reach a new one on the
    /// same socket before the device counts as lost. A driver that can restart its rings
    /// (<see cref="Driver.IDeviceRestartHandler"/>) then gets its outstanding requests made
    /// available again. <see cref="TimeSpan.Zero"/> (the default) gives up at once.
    /// </summary>
    public TimeSpan ReconnectTimeout { get; init; } = TimeSpan.Zero;

    /// <summary>Told, in one line each, when the back-end went away, while reconnecting, and when it is back.</summary>
    public Action<string>? OnReconnect { get; init; }

    /// <summary>Queue size limit reported to the driver (vhost-user cannot ask; libvhost-user accepts up to 1024).</summary>
    public int MaxQueueSize { get; init; } = 1024;

    /// <summary>Protocol features the front-end asks for, if the back-end offers them.</summary>
    public ulong ProtocolFeatures { get; init; } =
        VhostUserFeatures.Bit(VhostUserFeatures.Mq) | VhostUserFeatures.Bit(VhostUserFeatures.ReplyAck) | VhostUserFeatures.Bit(VhostUserFeatures.Config);

    /// <summary>Microseconds each queue's call thread keeps watching the used ring after completions before it sleeps (adapted down when nothing comes); 0: sleep at once.</summary>
    public int PollMicroseconds { get; init; }

    /// <summary>CPUs the queues' call threads are pinned to, queue i to entry i mod count (null: not pinned).</summary>
    public IReadOnlyList<int>? QueueCpus { get; init; }

    public ILogSink? Log { get; init; }
}
