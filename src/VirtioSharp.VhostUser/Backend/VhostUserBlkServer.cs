using VirtioSharp.Block;
using VirtioSharp.Diagnostics;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// A vhost-user-blk back-end: <see cref="VhostUserServer"/> around a <see cref="BlkDevice"/>,
/// which flushes the image whenever a front-end leaves and when the server stops (unless the
/// backend ignores flushes: <see cref="IBlockBackend.FlushIgnored"/>).
/// </summary>
public sealed class VhostUserBlkServer(BlkDevice device, string socketPath, ILogSink? log = null)
    : VhostUserServer(device, socketPath, log)
{
    public BlkDevice BlkDevice { get; } = device;

    protected override void OnSessionEnded()
    {
        var s = BlkDevice.Stats;
        Log.Info($"served {s.Total} requests: {s.BytesRead} bytes read, {s.BytesWritten} written, {s.IoErrors} I/O errors, {s.Unsupported} unsupported, {s.Malformed} malformed");
        Flush("the front-end left");
    }

    protected override void OnStopped() => Flush("the server stopped");

    private void Flush(string why)
    {
        if (BlkDevice.Backend.FlushIgnored is { } ignored)
            Log.Info($"{BlkDevice.Backend.Description} left as it is: {ignored} ({why})");
        else if (BlkDevice.Backend.Flush())
            Log.Info($"flushed {BlkDevice.Backend.Description} ({why})");
        else
            Log.Error($"flushing {BlkDevice.Backend.Description} failed ({why})");
    }
}
