namespace VirtioSharp.Block;

/// <summary>
/// Storage whose size can change while it is served (an RBD image resized by its owner, an image
/// file grown or truncated). <see cref="IBlockBackend.Capacity"/> follows the change, and the
/// device that serves it updates its configuration space and tells the driver (5.2.4 capacity).
/// </summary>
public interface IResizableBackend : IBlockBackend
{
    /// <summary>Raised after <see cref="IBlockBackend.Capacity"/> changed, with the new size in bytes, on the thread that noticed it.</summary>
    event Action<ulong>? CapacityChanged;

    /// <summary>Looks at the storage's size now (rather than waiting to be told); true when it changed. Never throws for an I/O error.</summary>
    bool RefreshCapacity();
}
