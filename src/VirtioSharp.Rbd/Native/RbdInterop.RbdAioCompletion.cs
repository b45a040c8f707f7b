using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>
    /// rbd_aio_create_completion: a completion that calls <paramref name="callback"/>(completion, arg)
    /// from a librbd thread when the operation it is given to finishes.
    /// </summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_aio_create_completion")]
    internal static unsafe partial int RbdAioCreateCompletion(nint arg, delegate* unmanaged<nint, nint, void> callback, out nint completion);

    /// <summary>rbd_aio_get_return_value: bytes transferred (reads), 0, or a negative errno.</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_aio_get_return_value")]
    [SuppressGCTransition]
    internal static partial nint RbdAioGetReturnValue(nint completion);

    /// <summary>rbd_aio_release: drops our reference to a completion (librbd keeps its own until the callback has returned).</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_aio_release")]
    internal static partial void RbdAioRelease(nint completion);
}
