using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Frontend;

namespace VirtioSharp.Cli.Frontend;

/// <summary>A vhost-user connection with the block driver started on it; disposing stops both in order.</summary>
internal sealed class FrontendSession : IDisposable
{
    private FrontendSession(VhostUserFrontendTransport transport, BlkDriver driver)
    {
        Transport = transport;
        Driver = driver;
    }

    public VhostUserFrontendTransport Transport { get; }
    public BlkDriver Driver { get; }

    /// <summary>
    /// Connects to <paramref name="socket"/> and starts the driver with <paramref name="queues"/> queues of
    /// <paramref name="queueSize"/>; <paramref name="extraMemory"/> bytes of shared memory are left for direct buffers.
    /// </summary>
    /// <param name="reconnect">How long to wait for a back-end that went away to come back (0: fail at once).</param>
    /// <param name="onReconnect">Told each step of a reconnect, one line at a time.</param>
    public static FrontendSession Open(string socket, int queues = 1, int queueSize = 128, int maxTransfer = 64 * 1024,
        ulong extraMemory = 0, ILogSink? log = null, TimeSpan reconnect = default, Action<string>? onReconnect = null, int pollMicroseconds = 0, bool packed = false, bool inlineCompletions = false, IReadOnlyList<int>? queueCpus = null)
    {
        var memory = MemoryFor(queues, queueSize, maxTransfer) + extraMemory;
        var transport = VhostUserFrontendTransport.Connect(socket, new VhostUserFrontendOptions
        {
            MemorySize = memory,
            Log = log,
            ReconnectTimeout = reconnect,
            OnReconnect = onReconnect,
            PollMicroseconds = pollMicroseconds,
            QueueCpus = queueCpus,
        });
        try
        {
            var driver = BlkDriver.Start(transport, new BlkDriverOptions
            {
                NumQueues = queues,
                QueueSize = queueSize,
                MaxTransfer = maxTransfer,
                InlineCompletions = inlineCompletions,
                Log = log,
                Ring = packed ? RingChoice.RequirePacked : RingChoice.Split,
            });
            return new FrontendSession(transport, driver);
        }
        catch
        {
            transport.Dispose();
            throw;
        }
    }

    /// <summary>The --reconnect option of bench and io: seconds to wait for a back-end that went away.</summary>
    public static System.CommandLine.Option<double> ReconnectOption(bool recursive = false) => new("--reconnect")
    {
        Description = "When the back-end goes away, seconds to wait for it to come back on the socket; outstanding requests are then made available again (0: fail at once)",
        DefaultValueFactory = _ => 30,
        Recursive = recursive,
    };

    /// <summary>Checks a --reconnect value and turns it into a time span.</summary>
    public static TimeSpan ReconnectTimeout(double seconds) =>
        seconds is >= 0 and <= 24 * 3600 ? TimeSpan.FromSeconds(seconds) : throw new CliException($"--reconnect {seconds} must be 0..86400 seconds", true);

    /// <summary>Shared memory the driver needs: rings plus, per descriptor, a request slot and its bounce buffer.</summary>
    public static ulong MemoryFor(int queues, int queueSize, int maxTransfer)
    {
        var size = 1 << (31 - int.LeadingZeroCount(Math.Max(1, queueSize)));
        var bounce = ((ulong)Math.Max(maxTransfer, 512) + 4095) & ~4095UL;
        var perQueue = SplitQueueLayout.For(size).TotalSize + 4096 + (ulong)size * (bounce + 4096);
        return (ulong)queues * perQueue + (1UL << 20);
    }

    /// <summary>Checks a byte range against the disk before any request, so the error names the user's numbers.</summary>
    public void CheckRange(ulong offset, ulong length, string what)
    {
        if (offset % BlkLayout.SectorSize != 0 || length % BlkLayout.SectorSize != 0)
            throw new CliException($"offset {offset} and length {length} must be multiples of {BlkLayout.SectorSize}", true);
        var capacity = Driver.Capacity;
        if (offset > capacity || length > capacity - offset)
            throw new CliException($"range {offset}+{length} lies beyond the end of the disk ({capacity} bytes)");
    }

    public void Dispose()
    {
        try
        {
            Driver.Dispose();
        }
        finally
        {
            Transport.Dispose();
        }
    }
}
