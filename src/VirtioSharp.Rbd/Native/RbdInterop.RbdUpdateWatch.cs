using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>rbd_update_watch: calls <paramref name="callback"/>(arg) from a librbd thread when the image header changes (resize, snapshots, features).</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_update_watch")]
    internal static unsafe partial int RbdUpdateWatch(SafeRbdImageHandle image, out ulong handle, delegate* unmanaged<nint, void> callback, nint arg);

    /// <summary>rbd_update_unwatch: stops the watch; no callback runs after it returns.</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_update_unwatch")]
    internal static partial int RbdUpdateUnwatch(SafeRbdImageHandle image, ulong handle);
}
