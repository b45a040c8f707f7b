using System.Diagnostics;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Block;

/// <summary>
/// virtio-blk's part of a drain: each chain goes through three visible steps, parse
/// (<see cref="BlkRequestParser"/>), validate (<see cref="BlkRequestValidator"/>) and execute
/// (<see cref="BlkRequestExecutor"/>, or started on an asynchronous backend by
/// <see cref="BlkAsyncRequests"/>), then gets its status byte. Queues may be drained
/// concurrently, one thread per queue; each has its own scratch.
/// </summary>
internal sealed unsafe class BlkChainHandler : IChainHandler
{
    private readonly BlkDevice _device;
    private readonly BlkRequestValidator _validator;
    private readonly BlkRequestExecutor _executor;
    private readonly BlkAsyncRequests _async;
    private readonly BlkThrottle? _throttle;
    private readonly IoVec[][] _iovScratch; // per queue, sized by its worker for the ring it drains

    public BlkChainHandler(BlkDevice device, BlkRequestValidator validator, BlkRequestExecutor executor, BlkAsyncRequests async, BlkThrottle? throttle, int numQueues)
    {
        _device = device;
        _validator = validator;
        _executor = executor;
        _async = async;
        _throttle = throttle;
        _iovScratch = new IoVec[numQueues][];
        for (var i = 0; i < _iovScratch.Length; i++)
            _iovScratch[i] = [];
    }

    public long WaitTicks(IDeviceQueue queue) => _throttle != null && queue.HasAvailable ? _throttle.WaitTicks(queue.Index) : 0;

    public uint HandleChain(IDeviceQueue queue, in DescriptorChain chain, IQueueIo? io)
    {
        var iov = _iovScratch[queue.Index];
        // A chain holds at most queue-size buffers (2.7.5.3.1), so its I/O vectors fit the ring's
        // size: sized when a queue first drains a ring of that size, never per request.
        if (iov.Length != queue.Size)
            _iovScratch[queue.Index] = iov = new IoVec[queue.Size];
        return HandleChain(queue.Index, chain, iov, io);
    }

    /// <summary>
    /// Runs one chain and returns the bytes written into its writable buffers (the used length),
    /// or <see cref="QueueDrainer.Deferred"/> when its I/O was started on <paramref name="io"/>.
    /// </summary>
    private uint HandleChain(int queue, in DescriptorChain chain, IoVec[] iov, IQueueIo? io)
    {
        var trace = _device.Trace; // the queue's recorder reports the chain, the used element and the status byte

        var started = Stopwatch.GetTimestamp();
        if (!BlkRequestParser.Parse(_device.Breaches, queue, chain, out var req))
        {
            _device.Stats.CountMalformed(queue);
            if (req.Status == null)
                return 0; // 2.7.8: no status byte can be trusted; give the head back with len 0
            *req.Status = (byte)BlkStatus.IoErr;
            return 1;
        }

        req.Started = started;
        var status = _validator.Validate(queue, ref req);
        if (status == BlkStatus.Ok)
            _throttle?.Charge((BlkRequestType)req.Header.Type, req.DataLength);
        if (status == BlkStatus.Ok && io != null && trace is not { Active: true } && _async.TryStart(queue, ref req, io))
            return QueueDrainer.Deferred;
        if (status == BlkStatus.Ok)
            status = _executor.Execute(ref req, iov);
        *req.Status = (byte)status;
        var written = status == BlkStatus.Ok ? req.Written + 1 : 1u;
        _device.Stats.Count(queue, req.Header.Type, status, req.DataLength, started);
        return written;
    }
}
