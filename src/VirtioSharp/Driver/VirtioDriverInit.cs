using VirtioSharp.Devices;

namespace VirtioSharp.Driver;

/// <summary>Thrown when a device cannot be brought up or fails under the driver.</summary>
public sealed class VirtioDeviceException(string message) : Exception(message);

/// <summary>The generic driver initialization sequence (3.1.1).</summary>
public static class VirtioDriverInit
{
    /// <summary>
    /// Runs 3.1.1 steps 1-6 and returns the accepted features; the caller then sets up its
    /// queues (step 7) and calls <see cref="Finish"/> (step 8).
    /// </summary>
    public static ulong Begin(IDriverTransport transport, uint expectedDeviceId, Func<ulong, ulong> chooseFeatures, Func<int, string>? featureName = null)
    {
        transport.Reset();                                        // 1. reset
        if (transport.DeviceId != expectedDeviceId)
            throw new VirtioDeviceException($"device ID is {transport.DeviceId}, expected {expectedDeviceId}");
        transport.SetStatus(DeviceStatus.Acknowledge);            // 2. ACKNOWLEDGE
        transport.SetStatus(DeviceStatus.Acknowledge | DeviceStatus.Driver); // 3. DRIVER
        var offered = transport.GetDeviceFeatures();              // 4. read features, choose a subset
        var accepted = chooseFeatures(offered) & offered;
        if (!VirtioFeatures.Has(accepted, VirtioFeatures.Version1))
            throw new VirtioDeviceException("device does not offer VIRTIO_F_VERSION_1; legacy devices are not supported");
        transport.SetDriverFeatures(accepted);
        var status = DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk;
        transport.SetStatus(status);                              // 5. FEATURES_OK
        if ((transport.GetStatus() & DeviceStatus.FeaturesOk) == 0) // 6. re-read: did it stick?
        {
            transport.SetStatus(status | DeviceStatus.Failed);
            throw new VirtioDeviceException($"device refused features {VirtioFeatures.Describe(accepted, featureName)}");
        }
        return accepted;
    }

    public static void Finish(IDriverTransport transport) =>                 // 8. DRIVER_OK
        transport.SetStatus(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk);
}
