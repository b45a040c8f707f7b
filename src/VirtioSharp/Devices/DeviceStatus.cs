namespace VirtioSharp.Devices;

/// <summary>Device status bits (2.1).</summary>
[Flags]
public enum DeviceStatus : uint
{
    None = 0,
    Acknowledge = 1,
    Driver = 2,
    DriverOk = 4,
    FeaturesOk = 8,
    DeviceNeedsReset = 64,
    Failed = 128,
}
