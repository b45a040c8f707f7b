using VirtioSharp.Devices;
using VirtioSharp.Memory;

namespace VirtioSharp.Driver;

/// <summary>Told by a transport when the device signals the driver.</summary>
public interface IInterruptHandler
{
    /// <summary>Used buffers on <paramref name="queue"/>, or on any queue when it is -1 (a shared IRQ).</summary>
    void OnUsedBuffers(int queue);
    /// <summary>The configuration (or the status, e.g. DEVICE_NEEDS_RESET) changed.</summary>
    void OnConfigChange();
    /// <summary>The device is gone (connection closed); every outstanding request must fail.</summary>
    void OnDeviceLost(string reason);
    /// <summary>
    /// The transport watches <paramref name="queue"/>'s used ring itself while
    /// <paramref name="polling"/> and needs no interrupt. When it stops, true means used buffers
    /// arrived meanwhile: it calls <see cref="OnUsedBuffers"/> instead of sleeping. A handler that
    /// leaves interrupts on answers false.
    /// </summary>
    bool SetPolling(int queue, bool polling) => false;
}

/// <summary>
/// A driver that can carry on when its transport brings a lost device back (a vhost-user
/// back-end that restarted, reached again on its socket). The transport calls it per queue after
/// the new device has the features and the memory, before it hands the ring over.
/// </summary>
public interface IDeviceRestartHandler
{
    /// <summary>Starts <paramref name="queue"/>'s ring afresh and makes what was outstanding available again; returns how many.</summary>
    int RestartQueue(int queue);
}

/// <summary>
/// What a virtio driver needs from a transport (virtio-mmio in-process, vhost-user front-end).
/// Drivers never know which one carries them.
/// </summary>
public interface IDriverTransport : IDisposable
{
    /// <summary>Memory the device can see; rings, headers and data buffers live here.</summary>
    GuestMemory Memory { get; }
    GuestAllocator Allocator { get; }
    uint DeviceId { get; }

    void Reset();
    DeviceStatus GetStatus();
    void SetStatus(DeviceStatus status);
    ulong GetDeviceFeatures();
    void SetDriverFeatures(ulong features);
    /// <summary>Largest queue size the device allows for <paramref name="queue"/>; 0 if the queue does not exist.</summary>
    int GetMaxQueueSize(int queue);
    void SetupQueue(int queue, int size, ulong descriptorTable, ulong driverArea, ulong deviceArea);
    void Notify(int queue);
    void ReadConfig(int offset, Span<byte> destination);
    uint ConfigGeneration { get; }
    void SetInterruptHandler(IInterruptHandler handler);
}
